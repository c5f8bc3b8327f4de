"""The PBSD kernel: patch self-distillation over ``[own key, queue]`` with a fused
backward pass.

The loss of a patch row is ``loss_r = sum_c t_rc (logsumexp_c s_rc - s_rc)`` for the
teacher's softmax ``t_r`` and the student's logits ``s_r``; its gradient is
``softmax(s_r) - t_r``. Student and teacher logits are written once each and turned into
that residual in place.
"""

import torch
from torch import Tensor

from dscl_plugin.functional.autograd import AutogradContext

_ROW_DOT_ELEMENTS = 1 << 22  # elements per block of the float64 row sums


def patch_distillation(
    student: Tensor, teacher: Tensor, key: Tensor, queue: Tensor | None
) -> Tensor:
    """``-sum_c softmax(teacher_r . c) log_softmax(student_r . c)`` over ``c in [k_i, queue]``.

    Args:
        student: (B, L, D) scaled student features (``s / T``), with gradient.
        teacher: (B, L, D) scaled teacher features; the target gets no gradient.
        key: (B, D) normalised keys (candidate 0 of image ``i``'s L rows).
        queue: (K, D) normalised queue, or None.

    Returns:
        (B, L) loss of each patch.
    """
    loss: Tensor = _PatchDistillation.apply(student, teacher.detach(), key, queue)
    return loss


class _PatchDistillation(torch.autograd.Function):
    """Fused :func:`patch_distillation`.

    Student and teacher logits over ``[k_i, queue]`` are written once each; the
    teacher becomes its softmax ``t`` and the student ``softmax(s) - t`` in place,
    which is all the backward pass needs:
    ``dL/ds_r = g_r (r_r0 k_i + r_r,1: @ M)``, ``dL/dk_i = sum_l g_r r_r0 s_r``,
    ``dL/dM = r_:,1:^T (g s)``.
    """

    @staticmethod
    def forward(
        ctx: AutogradContext, student: Tensor, teacher: Tensor, key: Tensor, queue: Tensor | None
    ) -> Tensor:
        batch_size, num_patches, dim = student.shape
        student_rows = student.reshape(-1, dim)
        student_logits = _patch_logits(student_rows, key, queue, num_patches)
        teacher_prob = _patch_logits(teacher.reshape(-1, dim), key, queue, num_patches)
        # loss_r = sum_c t_rc (lse_r - l_rc) = log sum_c exp(l_rc - m_r) - sum_c t_rc (l_rc - m_r)
        # with m_r = max_c l_rc. Row sums run in float64: float32 sums over 65k near-equal
        # terms drift by ~1e-4 and the loss could fall below its bound log(1 + K).
        _softmax_float64_sums_(teacher_prob)
        cross = _row_dot_float64(teacher_prob, student_logits)
        mass = teacher_prob.sum(dim=1, dtype=torch.float64)
        row_max, log_total = _softmax_float64_sums_(student_logits)
        loss = log_total - (cross / mass - row_max)
        if any(ctx.needs_input_grad):
            residual = student_logits.sub_(teacher_prob)
            direction = None  # r_r0 k_i + r_r,1: @ M, the student's gradient per unit g_r
            if ctx.needs_input_grad[0]:
                direction = residual[:, :1] * key.repeat_interleave(num_patches, dim=0)
                if queue is not None:
                    direction.addmm_(residual[:, 1:], queue)
            # the queue (maybe a view of a bank updated before backward) is kept only
            # when it needs a gradient
            queue_grad = queue is not None and ctx.needs_input_grad[3]
            if not queue_grad:
                residual, queue = residual[:, :1].clone(), None
            ctx.save_for_backward(residual, direction, student_rows)
        return loss.to(student.dtype).view(batch_size, num_patches)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: AutogradContext, grad_losses: Tensor
    ) -> tuple[Tensor | None, None, Tensor | None, Tensor | None]:
        residual, direction, student_rows = ctx.saved_tensors
        batch_size, num_patches = grad_losses.shape
        g = grad_losses.reshape(-1, 1)
        grad_student = grad_key = grad_queue = None
        if ctx.needs_input_grad[0]:
            grad_student = (direction * g).view(batch_size, num_patches, -1)
        if ctx.needs_input_grad[2]:
            grad_key = residual[:, :1] * g * student_rows
            grad_key = grad_key.view(batch_size, num_patches, -1).sum(dim=1)
        if ctx.needs_input_grad[3]:
            grad_queue = residual[:, 1:].T @ (student_rows * g)
        return grad_student, None, grad_key, grad_queue


def _patch_logits(rows: Tensor, key: Tensor, queue: Tensor | None, num_patches: int) -> Tensor:
    """(B L, 1 + K) logits of patch rows against ``[k_i, queue]``."""
    num_queue = 0 if queue is None else queue.shape[0]
    logits = rows.new_empty(rows.shape[0], 1 + num_queue)
    own = rows.reshape(key.shape[0], num_patches, -1) @ key[:, :, None]
    logits[:, 0] = own.reshape(-1)
    if queue is not None:
        torch.mm(rows, queue.T, out=logits[:, 1:])
    return logits


def _softmax_float64_sums_(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Turns ``logits`` (rows, N) into their softmax in place, the row sums of
    ``exp(l - max)`` accumulated in float64; returns the float64 row maxima and the logs
    of those sums (``logsumexp = max + log sum``)."""
    row_max = logits.amax(dim=1, keepdim=True)
    logits.sub_(row_max).exp_()
    total = logits.sum(dim=1, dtype=torch.float64)
    logits.div_(total.to(logits.dtype)[:, None])
    return row_max.squeeze(1).double(), total.log()


def _row_dot_float64(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(dim=1)`` accumulated in float64, a block of rows at a time (no
    full-size temporary)."""
    out = a.new_empty(a.shape[0], dtype=torch.float64)
    rows = max(1, _ROW_DOT_ELEMENTS // max(a.shape[1], 1))
    for start in range(0, a.shape[0], rows):
        block = slice(start, start + rows)
        out[block] = (a[block] * b[block]).sum(dim=1, dtype=torch.float64)
    return out
