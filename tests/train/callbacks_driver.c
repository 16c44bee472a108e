/* Feeds monitored values (one per line on stdin) to the callbacks and prints
 * per epoch: early-stop decision, learning rate after ReduceLROnPlateau, and
 * whether ModelCheckpoint(save_best_only) would save. Args: patience factor rl_patience maximize */
#include "train/callbacks.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int patience = atoi(argv[1]), rl_pat = atoi(argv[3]), maximize = atoi(argv[4]);
    double factor = atof(argv[2]), lr = 0.1, v;
    lp_early_stop e;
    lp_reduce_lr r;
    lp_monitor m;
    lp_early_stop_init(&e, patience, maximize);
    lp_reduce_lr_init(&r, factor, rl_pat, maximize);
    lp_monitor_init(&m, maximize);
    int epoch = 0;
    while (scanf("%lf", &v) == 1) {
        epoch++;
        int saved = lp_monitor_update(&m, v, epoch);
        int stop = lp_early_stop_update(&e, v, epoch);
        lr = lp_reduce_lr_update(&r, v, lr);
        printf("%d %d %.10g %d\n", epoch, stop, lr, saved);
    }
    return 0;
}
