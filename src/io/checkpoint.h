/* Our checkpoint = safetensors of the net's state dict (+ optional optimizer
 * or train state tensors). __metadata__ keys: "format":"loupe-checkpoint-1",
 * "arch", "top", "head", "num_classes", "classes" (JSON array of names),
 * "input_size" ("HxW"), "in_channels", "preprocess", "temperature",
 * "loupe_version", plus any extra meta given. */
#ifndef LP_CHECKPOINT_H
#define LP_CHECKPOINT_H

#include "core/core.h"
#include "nn/nn.h"

/* extra_tensors (e.g. optimizer state) are written after the net's tensors;
 * extra_meta_holder: only its meta is used (e.g. "classes", "preprocess",
 * "temperature", "epoch"); both may be NULL. Keys given in extra meta
 * override the defaults derived from the net. */
lp_status lp_checkpoint_save(const char *path, lp_net *net, const lp_tensor_list *extra_tensors,
                             const lp_tensor_list *extra_meta_holder);
/* True for tensors that hold optimizer or loop state ("optim.*", "train.*"), not the net. */
bool lp_checkpoint_is_state_tensor(const char *name);
/* Rebuilds the net from the metadata (max_batch 1 unless *net_out's config is
 * needed bigger: use lp_checkpoint_load_ex) and loads its tensors strictly
 * (tensors named "optim.*" or "train.*" are ignored). all_out (optional,
 * initialised by the callee) receives everything in the file incl. meta. */
lp_status lp_checkpoint_load(const char *path, lp_net **net_out, lp_tensor_list *all_out);
/* Same with a chosen max_batch (>= 1). */
lp_status lp_checkpoint_load_ex(const char *path, int max_batch, lp_net **net_out, lp_tensor_list *all_out);
/* Builds the net config from checkpoint metadata (max_batch left at 1). */
lp_status lp_checkpoint_config_from_meta(const lp_tensor_list *meta, const char *path, lp_net_config *cfg);
/* A "temperature" value: a number in 0.001..1000 (diagnose --apply stores 0.01..100; far
 * outside, the outputs would be all or nothing). false where it is not. */
bool lp_checkpoint_temperature(const char *value, double *t);

/* Internal side of the public lp_model (include/loupe.h, section model). */
/* Wraps a net (ownership taken) and metadata (copied) into an lp_model. */
lp_status lp_model_wrap(lp_net *net, const lp_tensor_list *meta, lp_model **out);
lp_net *lp_model_net(lp_model *m);
const lp_tensor_list *lp_model_meta_list(const lp_model *m);

#endif
