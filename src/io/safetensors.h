/* safetensors read/write (https://github.com/huggingface/safetensors format):
 * 8-byte little-endian header length, JSON header, raw little-endian data. */
#ifndef LP_SAFETENSORS_H
#define LP_SAFETENSORS_H

#include "core/core.h"

/* F32/BF16/F16/I64/U8 kept as stored; __metadata__ into out->meta (string
 * values). Every offset/length/shape is checked: truncated file, header longer
 * than the file, overlapping or out-of-range offsets -> LP_ERR_FORMAT naming
 * the file and the tensor. out must be initialised (lp_tensor_list_init). */
lp_status lp_safetensors_read(const char *path, lp_tensor_list *out);
/* LP_ERR_ARG for a folder given where a weights or checkpoint file goes; a run folder's
 * message names its checkpoints/best.safetensors. */
lp_status lp_fail_folder_given(const char *path);
/* Same from a memory buffer (name is used in messages). */
lp_status lp_safetensors_parse(const uint8_t *data, size_t size, const char *name, lp_tensor_list *out);
/* Atomic (lp_atomic_*), tensors 8-byte aligned, __metadata__ from l->meta. */
lp_status lp_safetensors_write(const char *path, const lp_tensor_list *l);
/* Same from borrowed tensors (data not owned/copied); meta may be NULL. */
lp_status lp_safetensors_write_views(const char *path, int count, const char *const *names, const lp_tensor *tensors,
                                     const lp_tensor_list *meta);

#endif
