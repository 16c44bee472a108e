/* The one CPU capability probe of the library: the instruction-set level that
 * oneDNN runs at here (dnnl_get_effective_cpu_isa), so that ONEDNN_MAX_CPU_ISA caps
 * our own kernels together with oneDNN's, and a user on a smaller CPU can be
 * emulated on a bigger one. Kernels ask lp_cpu_isa() >= LP_ISA_..., never the CPU
 * directly. Off x86-64 (or in the portable-only build) the level is generic. */
#include "backend.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static lp_isa g_isa, g_onednn_isa; /* ours; oneDNN's (the same where our x86-64 code is built) */
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

static void isa_init(void) {
    g_isa = g_onednn_isa = LP_ISA_GENERIC;
#if defined(__x86_64__)
    /* effective = the hardware's level, lowered by the cap; it is fixed at oneDNN's
     * first use, so ask after the engine exists (as oneDNN's own kernels do) */
    if (!lp_dnnl_engine()) return;
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const struct {
        dnnl_cpu_isa_t need;
        lp_isa level;
    } levels[] = {{dnnl_cpu_isa_avx512_core_amx, LP_ISA_AMX},
                  {dnnl_cpu_isa_avx512_core_bf16, LP_ISA_AVX512_BF16},
                  {dnnl_cpu_isa_avx512_core, LP_ISA_AVX512},
                  {dnnl_cpu_isa_avx2, LP_ISA_AVX2}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if ((isa & (unsigned)levels[i].need) == (unsigned)levels[i].need) {
            g_onednn_isa = levels[i].level;
            break;
        }
#endif
    /* without our x86-64 code (backend.h) generic is the only level we have kernels for */
    g_isa = LP_X86_KERNELS ? g_onednn_isa : LP_ISA_GENERIC;
}

lp_isa lp_cpu_isa(void) {
    pthread_once(&g_isa_once, isa_init);
    return g_isa;
}

bool lp_winograd_onednn(void) {
    pthread_once(&g_isa_once, isa_init);
    return g_onednn_isa >= LP_ISA_AVX512;
}

bool lp_winograd_available(void) {
    pthread_once(&g_isa_once, isa_init);
    return g_onednn_isa >= LP_ISA_AVX512 || g_isa >= LP_ISA_AVX2;
}

const char *lp_isa_name(lp_isa isa) {
    static const char *const names[] = {"generic", "AVX2", "AVX-512", "AVX512-BF16", "AMX"};
    return (unsigned)isa < sizeof names / sizeof names[0] ? names[isa] : "?";
}

static char g_cpu_name[49];
static pthread_once_t g_name_once = PTHREAD_ONCE_INIT;

/* The processor's name as the system reports it (Linux: /proc/cpuinfo, which is also
 * what lscpu shows), else its cpuid brand string (leaves 0x80000002-4), spaces squeezed. */
static void name_init(void) {
    char raw[49] = {0}, line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) || !colon) continue;
        snprintf(raw, sizeof raw, "%s", colon + 1 + strspn(colon + 1, " \t"));
        raw[strcspn(raw, "\n")] = 0;
        break;
    }
    if (f) fclose(f);
#if defined(__x86_64__) || defined(__i386__)
    unsigned r[12];
    if (!raw[0] && (unsigned)__get_cpuid_max(0x80000000, NULL) >= 0x80000004u) {
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002 + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        memcpy(raw, r, 48);
    }
#endif
    size_t o = 0;
    for (size_t i = 0; raw[i] && o + 1 < sizeof g_cpu_name; i++)
        if (raw[i] != ' ' || (o && g_cpu_name[o - 1] != ' ')) g_cpu_name[o++] = raw[i];
    while (o && g_cpu_name[o - 1] == ' ') o--;
    g_cpu_name[o] = 0;
    if (!o) snprintf(g_cpu_name, sizeof g_cpu_name, "unknown CPU");
}

const char *lp_cpu_name(void) {
    pthread_once(&g_name_once, name_init);
    return g_cpu_name;
}

static char g_description[80];
static pthread_once_t g_description_once = PTHREAD_ONCE_INIT;
static void description_init(void) {
    snprintf(g_description, sizeof g_description, "%s (%s)", lp_isa_name(lp_cpu_isa()), lp_cpu_name());
}

const char *lp_cpu_description(void) {
    pthread_once(&g_description_once, description_init);
    return g_description;
}
