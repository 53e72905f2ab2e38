# A busy asyncio target: 20,000 tasks that wake up every few milliseconds, each updating its
# own dict (kept in a module-level list too, so that it is reachable without reading frames).
import asyncio

payloads = []


async def worker(i):
    payload = {"id": i, "name": "task-%d" % i}
    payloads.append(payload)
    while True:
        await asyncio.sleep(0.001 * (i % 10 + 1))
        payload["n"] = payload.get("n", 0) + 1


async def main():
    tasks = [asyncio.ensure_future(worker(i)) for i in range(20000)]
    await asyncio.sleep(0)
    print("READY", flush=True)
    await asyncio.gather(*tasks)


asyncio.run(main())
