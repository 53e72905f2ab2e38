# A target that churns reference cycles without pause, so that collections run all the time and
# a census often finds one in progress (gc.collecting). It keeps a stable heap beside the churn.
import gc, sys

gc.set_threshold(100, 5, 5)


class Node:
    pass


stable = [{"k": i, "v": [i, str(i)]} for i in range(20000)]
print("READY", flush=True)
while True:
    for _ in range(1000):
        a = Node()
        b = Node()
        a.other = b
        b.other = a
        a.items = [a, b, {"x": a}]
