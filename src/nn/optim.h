/* Optimizers over an lp_net's trainable parameters, PyTorch 1.13 semantics
 * (torch.optim.SGD / Adam / AdamW, non-foreach, amsgrad off). State lives in
 * flat buffers with the same offsets as the net's weights. */
#ifndef LP_OPTIM_H
#define LP_OPTIM_H

#include "nn/nn.h"

typedef enum lp_opt_kind { LP_OPT_SGD, LP_OPT_ADAM, LP_OPT_ADAMW } lp_opt_kind;
typedef struct lp_optim_config {
    lp_opt_kind kind;
    float lr, momentum, weight_decay, beta1, beta2, eps;
    bool nesterov;
} lp_optim_config;
typedef struct lp_optim lp_optim;

/* SGD lr 0.01 momentum 0; betas (0.9, 0.999), eps 1e-8, weight decay 0
 * (AdamW users usually set 0.01 as PyTorch's default). */
lp_optim_config lp_optim_default_config(lp_opt_kind kind);
lp_status lp_optim_create(lp_net *net, const lp_optim_config *cfg, lp_optim **out);
void lp_optim_free(lp_optim *o);
/* One update of the trainable params from their grads, with learning rate lr. */
lp_status lp_optim_step(lp_optim *o, float lr);
/* lp_net_backward then lp_optim_step, with the same result bit for bit, except that
 * conv layers whose weight gradient comes from the small-map kernel (3x3 on maps of
 * <= 16 pixels: VGG's last six at 32x32) apply their update as backward computes it,
 * never storing the gradient (faster: the update is memory-bound). Gradients are
 * zeroed afterwards (lp_net_zero_grad: those layers' are gone): call the two separately
 * to inspect gradients (histograms, finiteness checks) or to accumulate them. */
lp_status lp_net_backward_step(lp_net *net, lp_optim *o, float lr);
/* State for checkpoints/resume: "optim.<param name>.momentum_buffer" (SGD),
 * "optim.<param name>.exp_avg" / ".exp_avg_sq" (Adam/AdamW), "optim.step"
 * (I64 scalar, shape (1)). Only trainable params with state are written. */
lp_status lp_optim_state_dict(lp_optim *o, lp_tensor_list *out);
/* Ignores tensors not starting with "optim."; shape mismatch -> LP_ERR_SHAPE. */
lp_status lp_optim_load_state_dict(lp_optim *o, const lp_tensor_list *in);

#endif
