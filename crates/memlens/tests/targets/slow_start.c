/* An audit library (LD_AUDIT) for it::python_view_path: the dynamic loader calls la_version
 * before it maps any of the program's libraries, and this one holds a Python program there
 * for SLOW_START_MS milliseconds, the way a loaded machine can hold a starting process: its
 * executable is mapped, libpython not yet. Other programs (memlens inherits the variables)
 * are not held. */
#include <errno.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

unsigned int la_version(unsigned int version) {
    const char *ms = getenv("SLOW_START_MS");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (ms != NULL && n > 0) {
        exe[n] = 0;
        const char *base = strrchr(exe, '/');
        if (strncmp(base ? base + 1 : exe, "python", 6) == 0) {
            long v = atol(ms);
            struct timespec t = {v / 1000, (v % 1000) * 1000000L};
            while (nanosleep(&t, &t) != 0 && errno == EINTR) {
            }
        }
    }
    return version;
}
