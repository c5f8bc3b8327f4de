"""Independent reference formulas the tests compare the package against: DSCL, SupCon and
PBSD written with explicit loops over anchors and candidates, the candidate and positive sets
of the PML layouts, and a slot-by-slot ring buffer. Definitions only, no tests."""

import math

import torch
import torch.nn.functional as F

T = 0.07
ALPHA = 1.0 / 9.0


def naive_contrastive(
    query: torch.Tensor,
    key: torch.Tensor,
    labels: torch.Tensor,
    queue: torch.Tensor | None,
    queue_labels: torch.Tensor | None,
    alpha: float | None,
    temperature: float = T,
) -> torch.Tensor:
    """DSCL (alpha) or SupCon (alpha None), one anchor and one candidate at a time."""
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    # (feature, label, anchor whose own key it is, query row)
    cands = [(q[j], int(labels[j]), None, j) for j in range(len(q))]
    cands += [(k[j], int(labels[j]), j, None) for j in range(len(k))]
    if queue is not None:
        m = F.normalize(queue, dim=1)
        cands += [(m[j], int(queue_labels[j]), None, None) for j in range(len(m))]
    losses: list[torch.Tensor] = []
    for i in range(len(q)):
        logits, own, positives = [], None, []
        for feat, label, own_of, query_index in cands:
            if query_index == i:
                continue  # the anchor is never its own candidate
            if own_of == i:
                own = len(logits)
            elif label == int(labels[i]):
                positives.append(len(logits))
            logits.append(torch.dot(q[i], feat) / temperature)
        log_p = torch.stack(logits) - torch.logsumexp(torch.stack(logits), dim=0)
        if alpha is None:
            w_own = w_pos = 1.0 / (len(positives) + 1)
        elif positives:
            w_own, w_pos = alpha, (1.0 - alpha) / len(positives)
        else:
            w_own, w_pos = 1.0, 0.0
        loss = -w_own * log_p[own]
        for p in positives:
            loss = loss - w_pos * log_p[p]
        losses.append(loss)
    return torch.stack(losses).mean()


def naive_pbsd(patch, region, key, queue, temperature: float = T) -> torch.Tensor:
    """-sum softmax(teacher) * log_softmax(student) over [k_i, queue], per patch.

    The teacher distribution is a constant target: no gradient to region, key or queue.
    """
    s, t = F.normalize(patch, dim=-1), F.normalize(region, dim=-1).detach()
    k = F.normalize(key, dim=-1)
    m = [] if queue is None else list(F.normalize(queue, dim=-1))
    total = 0.0
    b, l, _ = patch.shape
    for i in range(b):
        cands = [k[i]] + m
        for j in range(l):
            student = torch.stack([torch.dot(s[i, j], c) for c in cands]) / temperature
            teacher = torch.stack([torch.dot(t[i, j], c.detach()) for c in cands]) / temperature
            total = total - (teacher.softmax(0) * student.log_softmax(0)).sum()
    return total / (b * l)


def cosine(a, b):
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def naive_loss(anchors, refs, alpha, candidates, own, positives, sim=cosine, temperature=T):
    """Per-anchor DSCL with explicit loops; candidates/positives are lists of ref columns."""
    out = []
    for i, anchor in enumerate(anchors):
        logits = {c: sim(anchor, refs[c]) / temperature for c in candidates[i]}
        lse = math.log(sum(math.exp(v) for v in logits.values()))
        logp = {c: v - lse for c, v in logits.items()}
        pos = positives[i]
        if pos:
            loss = -(alpha * logp[own[i]] + (1 - alpha) / len(pos) * sum(logp[c] for c in pos))
        else:
            loss = -logp[own[i]]
        out.append(loss)
    return torch.tensor(out, dtype=torch.float64)


def layout1_sets(labels):
    """Candidates, partners and class positives of layout 1 (every other row)."""
    n = len(labels)
    own = [(i + n // 2) % n for i in range(n)]
    cands = [[j for j in range(n) if j != i] for i in range(n)]
    pos = [[j for j in cands[i] if j != own[i] and labels[j] == labels[i]] for i in range(n)]
    return cands, own, pos


def layout2_sets(labels, ref_labels):
    n, r = len(labels), len(ref_labels)
    cands = [list(range(r)) for _ in range(n)]
    pos = [[j for j in range(r) if j != i and ref_labels[j] == labels[i]] for i in range(n)]
    return cands, list(range(n)), pos


def with_queries(anchors, labels, refs, cands, own, pos):
    """Layout 2 with ``query_candidates``: the other anchors (queries) as extra candidates
    before the ref columns, class positives by label. Returns refs and the shifted sets."""
    n = len(anchors)
    refs = list(anchors) + [refs[c] for c in range(len(refs))]
    others = [[j for j in range(n) if j != i] for i in range(n)]
    cands = [others[i] + [n + c for c in cands[i]] for i in range(n)]
    pos = [
        [j for j in others[i] if labels[j] == labels[i]] + [n + c for c in pos[i]] for i in range(n)
    ]
    return refs, cands, [n + o for o in own], pos


def tuple_sets(indices_tuple, n, own, layout1):
    """Candidates and class positives given by an (a1, p, a2, n) tuple."""
    a1, p, a2, neg = (x.tolist() for x in indices_tuple)
    cands = [{own[i]} for i in range(n)]
    pos = [set() for _ in range(n)]
    for a, b in zip(a1, p):
        if not (layout1 and a == b) and b != own[a]:
            pos[a].add(b)
            cands[a].add(b)
    for a, b in zip(a2, neg):
        cands[a].add(b)
    return [sorted(c) for c in cands], [sorted(x) for x in pos]


class NaiveRing:
    """Ring buffer of (embedding, label) written slot by slot."""

    def __init__(self, size):
        self.slots, self.ptr = [None] * size, 0

    def enqueue(self, keys, labels):
        start = self.ptr
        for key, label in zip(keys, labels.tolist()):
            self.slots[self.ptr] = (key.clone(), label)
            self.ptr = (self.ptr + 1) % len(self.slots)
        return [(start + i) % len(self.slots) for i in range(len(keys))]

    def expected(self, queries, labels, partner_slots, alpha):
        """The loss of ``queries`` against the other queries and the filled slots."""
        n = len(queries)
        filled = [s for s in range(len(self.slots)) if self.slots[s] is not None]
        refs = {n + s: self.slots[s][0] for s in filled}
        refs.update(enumerate(queries))
        cands = [[j for j in range(n) if j != i] + [n + s for s in filled] for i in range(n)]
        pos = [
            [
                c
                for c in cands[i]
                if c != n + partner_slots[i] and self._label(c, n, labels) == labels[i]
            ]
            for i in range(n)
        ]
        own = [n + s for s in partner_slots]
        return naive_loss(queries, refs, alpha, cands, own, pos)

    def _label(self, column, n, labels):
        return labels[column] if column < n else self.slots[column - n][1]


def naive_kcl_parts(
    query, key, queue, positive_rows, temperature=T, targets=None, target_rows=None
):
    """The two parts of KCL / TSC (official ``LTH14/targeted-supcon`` ``KCL``: ``loss_class``
    and ``loss_target`` before its weight), one anchor at a time, each (B,).

    Columns of anchor i: its own key, every queue row, every target row; ``positive_rows[i]``
    lists the queue rows that are its positives, ``target_rows[i]`` its target rows.
    ``class_i = -(log p(k_i) + sum_queue log p) / |P_i|``, ``target_i = -sum_targets log p
    / |P_i|``.
    """
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    m = [] if queue is None else list(F.normalize(queue, dim=1))
    t = [] if targets is None else list(targets)
    class_parts, target_parts = [], []
    for i in range(len(q)):
        columns = [k[i]] + m + t
        logits = torch.stack([torch.dot(q[i], c) for c in columns]) / temperature
        log_p = logits - torch.logsumexp(logits, dim=0)
        own_targets = [] if target_rows is None else target_rows[i]
        class_part = -log_p[0]
        for r in positive_rows[i]:
            class_part = class_part - log_p[1 + r]
        target_part = log_p.new_zeros(())
        for r in own_targets:
            target_part = target_part - log_p[1 + len(m) + r]
        count = 1 + len(positive_rows[i]) + len(own_targets)
        class_parts.append(class_part / count)
        target_parts.append(target_part / count)
    return torch.stack(class_parts), torch.stack(target_parts)


def naive_kcl(
    query, key, queue, positive_rows, temperature=T, targets=None, target_rows=None, tw=1.0
):
    """KCL / TSC, ``mean_i(class_i + tw target_i)`` of :func:`naive_kcl_parts`."""
    class_parts, target_parts = naive_kcl_parts(
        query, key, queue, positive_rows, temperature, targets, target_rows
    )
    return (class_parts + tw * target_parts).mean()


def naive_balscl(view1, view2, labels, prototypes, temperature=T):
    """BCL's BalSCL (official ``loss/contrastive.py``), one anchor and one entry at a time:
    the denominator divides each entry of class c by the count of class c among the
    2B views and C prototypes, less one for the anchor's own class."""
    z = F.normalize(torch.cat([view1, view2]), dim=1)
    w = F.normalize(prototypes, dim=1)
    entries = [(z[j], int(y)) for j, y in enumerate(torch.cat([labels, labels]))]
    entries += [(w[c], c) for c in range(len(w))]
    count = {c: sum(1 for _, y in entries if y == c) for c in range(len(w))}
    losses = []
    for i in range(len(z)):
        yi = entries[i][1]
        terms, positives = [], []
        for j, (x, y) in enumerate(entries):
            if j == i:
                continue
            logit = torch.dot(z[i], x) / temperature
            terms.append(torch.exp(logit) / (count[y] - (1 if y == yi else 0)))
            if y == yi:
                positives.append(logit)
        log_denominator = torch.log(torch.stack(terms).sum())
        losses.append(-sum(p - log_denominator for p in positives) / len(positives))
    return torch.stack(losses).mean()


def naive_logit_adjust(logits, labels, class_counts, tau=1.0):
    """-log softmax(z + tau log prior)[y], averaged; prior n_c / sum n."""
    total = float(sum(class_counts))
    out = []
    for row, y in zip(logits, labels.tolist()):
        adjusted = [row[c] + tau * math.log(n / total) for c, n in enumerate(class_counts)]
        out.append(torch.logsumexp(torch.stack(adjusted), dim=0) - adjusted[y])
    return torch.stack(out).mean()


def naive_paco(
    query, key, labels, class_logits, queue, queue_labels, class_counts,
    alpha, beta, gamma, temperature, base_temperature=None, supt=1.0,
):  # fmt: skip
    """PaCo (official ``PaCo/LT/losses.py`` ``PaCoLoss`` on ``cat(q, k, queue)``), one anchor
    and one column at a time, with the exact log-sum-exp (no 1e-12 guard)."""
    base_temperature = temperature if base_temperature is None else base_temperature
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    entries = [(q[j], int(y), j) for j, y in enumerate(labels)]
    entries += [(k[j], int(y), None) for j, y in enumerate(labels)]
    if queue is not None:
        m = F.normalize(queue, dim=1)
        entries += [(m[j], int(y), None) for j, y in enumerate(queue_labels)]
    total = float(sum(class_counts))
    losses = []
    for i in range(len(q)):
        yi = int(labels[i])
        class_terms = [
            (class_logits[i, c] + math.log(n / total + 1e-9)) / supt
            for c, n in enumerate(class_counts)
        ]
        contrast = [(torch.dot(q[i], x) / temperature, y) for x, y, row in entries if row != i]
        denominator = sum(torch.exp(t) for t in class_terms)
        denominator = denominator + gamma * sum(torch.exp(t) for t, _ in contrast)
        log_denominator = torch.log(denominator)
        weighted = beta * (class_terms[yi] - log_denominator)
        weight = beta
        for t, y in contrast:
            if y == yi:
                weighted = weighted + alpha * (t - log_denominator)
                weight += alpha
        losses.append(-(temperature / base_temperature) * weighted / weight)
    return torch.stack(losses).mean()
