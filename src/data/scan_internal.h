/* Private to src/data: what a scan keeps beyond the public lp_split. */
#ifndef LP_DATA_SCAN_INTERNAL_H
#define LP_DATA_SCAN_INTERNAL_H
#include "data/data_internal.h"

typedef struct lp_sample_meta {
    int width, height;        /* as stored */
    char mode[8];
    lp_image_format format;
    uint64_t hash;            /* content hash (0 when not read) */
    int64_t size;             /* bytes */
} lp_sample_meta;

typedef struct lp_split_ext {
    lp_split s;               /* first: an lp_split * points here */
    lp_sample_meta *meta;     /* num_samples */
    int ignored_hidden, ignored_symlink, ignored_nonimage, ignored_other;
    bool from_validation_split;
} lp_split_ext;

struct lp_dataset {
    char *dir;
    lp_split_ext *splits[3];  /* train, valid, test */
    char valid_dir[16];       /* "valid", "validation" or "" */
    int num_notes, num_problems;
    char **notes;             /* informative lines */
    char **problems;          /* structural errors: empty class, missing folder, ... */
};

/* Scan without failing on bad files or structural problems (they are recorded);
 * fails only when DATA itself cannot be used. */
lp_status lp_dataset_scan_collect(const char *data_dir, const lp_scan_options *opt, lp_dataset **out);
#endif
