#include "core/atomic_cleanup.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* pid of "<name>.tmp.<pid>", or 0 when the name is not such a temporary. */
static long temp_owner(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t || t == name) return 0;
    const char *d = t + 5;
    while ((t = strstr(d, ".tmp.")) != NULL) d = t + 5; /* the last ".tmp." */
    if (!*d) return 0;
    for (const char *q = d; *q; q++)
        if (*q < '0' || *q > '9') return 0;
    long pid = strtol(d, NULL, 10);
    return pid > 0 ? pid : 0;
}

lp_status lp_atomic_remove_stale(const char *dir, int *removed) {
    if (removed) *removed = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return LP_OK;
        return lp_fail(LP_ERR_IO, "%s: cannot list (%s)", dir, strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = temp_owner(e->d_name);
        if (!pid || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* its writer may still be running */
        char *path = lp_path_join(dir, e->d_name);
        if (path && unlink(path) == 0 && removed) (*removed)++;
        free(path);
    }
    closedir(d);
    return LP_OK;
}
