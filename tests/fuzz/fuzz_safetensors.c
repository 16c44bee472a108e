/* libFuzzer target: safetensors parsing (lp_safetensors_parse, what
 * lp_safetensors_read does after reading the file) and the checkpoint metadata
 * checks that `loupe evaluate/predict/summary` run on a checkpoint
 * (lp_checkpoint_config_from_meta). Every input must be accepted or refused with
 * a message: no crash, leak, overrun or UB. */
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_tensor_list l;
    lp_tensor_list_init(&l);
    if (lp_safetensors_parse(data, size, "fuzz.safetensors", &l) == LP_OK) {
        for (int i = 0; i < l.count; i++) { /* touch every byte the parser handed out */
            volatile uint8_t acc = 0;
            const uint8_t *p = l.items[i].t.data;
            size_t n = lp_tensor_nbytes(&l.items[i].t);
            for (size_t j = 0; p && j < n; j += 61) acc ^= p[j];
            if (n) acc ^= p[n - 1];
            (void)acc;
        }
        lp_net_config cfg;
        lp_checkpoint_config_from_meta(&l, "fuzz.safetensors", &cfg);
    }
    lp_tensor_list_free(&l);
    return 0;
}
