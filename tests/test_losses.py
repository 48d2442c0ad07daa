"""cotdistill.losses: hand computations, masks, TRL cross-checks (values and gradients), dtypes, errors."""
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cotdistill.losses as L
from cotdistill.losses import (IGNORE_INDEX, LABEL_PREFIX, RATIONALE_PREFIX, TASK_PREFIXES, HiddenAlignment,
                               answer_loss, answer_mask_from_marker, consistency_kl, cot_distillation_loss,
                               generalized_jsd_loss, hidden_alignment_loss, kl_rows, on_policy_batch,
                               rationale_lm_loss, shift, step_by_step_examples, step_by_step_loss,
                               token_cross_entropy, with_task_prefix)

torch.set_num_threads(1)


def logs(*ps):
    "Logits equal to log-probabilities: log_softmax gives them back."
    return [math.log(p) for p in ps]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


P_T, P_S = [1 / 2, 1 / 2], [1 / 4, 3 / 4]  # teacher, student at the one scored position
ST = torch.tensor([[logs(*P_S), [0.0, 0.0]]])  # (1, 2, 2)
TT = torch.tensor([[logs(*P_T), [0.0, 0.0]]])
LAB2 = torch.tensor([[IGNORE_INDEX, 0]])


def toy_batch(seed=0, V=7):
    "Two rows: question (-100), rationale, '####' (id 6), answer; row 1 padded."
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 3, 0], [1, 2, 4, 6, 5, 0, 0, 0]])
    labels = ids.clone(); labels[:, :2] = IGNORE_INDEX; labels[1, 5:] = IGNORE_INDEX
    am = answer_mask_from_marker(ids, [6], labels)
    return ids, labels, am, torch.randn(2, 8, V, generator=g), torch.randn(2, 8, V, generator=g)


# ---- public API -----------------------------------------------------------------------------------
def test_public_names():
    for name in ["shift", "token_cross_entropy", "rationale_lm_loss", "answer_loss", "answer_mask_from_marker",
                 "consistency_kl", "kl_rows", "hidden_alignment_loss", "HiddenAlignment", "cot_distillation_loss",
                 "step_by_step_loss", "step_by_step_examples", "with_task_prefix", "generalized_jsd_loss",
                 "on_policy_batch", "IGNORE_INDEX", "LABEL_PREFIX", "RATIONALE_PREFIX", "TASK_PREFIXES"]:
        assert name in L.__all__, name
    assert (LABEL_PREFIX, RATIONALE_PREFIX) == ("[label]", "[rationale]")
    assert TASK_PREFIXES == {"label": "[label]", "rationale": "[rationale]"}


# ---- shift and masks --------------------------------------------------------------------------------
def test_shift():
    lg, lb = torch.randn(2, 5, 3), torch.arange(10).view(2, 5)
    a, b = shift(lg, lb)
    assert a.shape == (2, 4, 3) and torch.equal(b, lb[:, 1:]) and torch.equal(a, lg[:, :-1])
    with pytest.raises(ValueError, match=r"labels \(B, T\)"):
        shift(lg, lb[:, :3])


def test_answer_mask_from_marker():
    ids, labels, am, *_ = toy_batch()
    assert am[0].nonzero().flatten().tolist() == [6, 7]  # after '####' at 5 (7 is a labelled 0-id token)
    assert am[1].nonzero().flatten().tolist() == [4]  # padding excluded by labels
    assert answer_mask_from_marker(ids, [6])[1].nonzero().flatten().tolist() == [4, 5, 6, 7]  # without labels
    ids2 = torch.tensor([[6, 1, 6, 2, 2]])  # last occurrence wins
    assert answer_mask_from_marker(ids2, [6]).tolist() == [[False, False, False, True, True]]
    assert answer_mask_from_marker(ids2, [1, 6]).tolist() == [[False, False, False, True, True]]  # 2-token marker
    assert not answer_mask_from_marker(ids2, [9]).any()
    assert not answer_mask_from_marker(ids2, []).any()
    assert not answer_mask_from_marker(ids2, [6] * 9).any()  # marker longer than the row


# ---- cross-entropy ------------------------------------------------------------------------------------
def test_cross_entropy_by_hand():
    logits = torch.tensor([[logs(1 / 4, 1 / 2, 1 / 4), logs(1 / 2, 1 / 4, 1 / 4), [1e4, -1e4, 0.0]]])
    lab = torch.tensor([[IGNORE_INDEX, 1, 2]])
    assert token_cross_entropy(logits, lab).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert token_cross_entropy(logits, lab, "sum").item() == pytest.approx(3 * math.log(2), abs=1e-6)
    none = token_cross_entropy(logits, lab, "none")
    assert none.shape == (1, 2) and none[0].tolist() == pytest.approx([math.log(2), math.log(4)], abs=1e-6)
    assert token_cross_entropy(logits, lab, "none", shift=False).shape == (1, 3)
    empty = token_cross_entropy(logits.requires_grad_(), torch.full_like(lab, IGNORE_INDEX))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.all(logits.grad == 0)


def test_cross_entropy_matches_torch_and_bf16():
    _, labels, _, logits, _ = toy_batch()
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert token_cross_entropy(logits, labels).item() == pytest.approx(ref.item(), abs=1e-6)
    ref_sum = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    assert token_cross_entropy(logits, labels, "sum").item() == pytest.approx(ref_sum.item(), abs=1e-5)
    out = token_cross_entropy(logits.bfloat16(), labels)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(ref.item(), abs=0.05)


def test_cross_entropy_large_logits_stable():
    logits = torch.tensor([[[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    out = token_cross_entropy(logits, torch.tensor([[IGNORE_INDEX, 2]]))
    out.backward()
    assert out.item() == pytest.approx(2000.0) and torch.isfinite(logits.grad).all()


def test_cross_entropy_errors():
    logits = torch.zeros(1, 3, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        token_cross_entropy(logits, torch.tensor([[0, 3, 1]]))
    with pytest.raises(ValueError, match="allowed"):
        token_cross_entropy(logits, torch.tensor([[0, 1, 1]]), reduction="avg")
    with pytest.raises(ValueError, match="logits"):
        token_cross_entropy(torch.zeros(3, 3), torch.tensor([[0, 1, 1]]))


def test_rationale_and_answer_masks():
    _, labels, am, logits, _ = toy_batch()
    lm, ans = rationale_lm_loss(logits, labels, am), answer_loss(logits, labels, am)
    n_ans, n_all = am[:, 1:].sum().item(), (labels[:, 1:] != IGNORE_INDEX).sum().item()
    full = token_cross_entropy(logits, labels)
    assert ((lm * (n_all - n_ans) + ans * n_ans) / n_all).item() == pytest.approx(full.item(), abs=1e-5)
    assert rationale_lm_loss(logits, labels).item() == pytest.approx(full.item(), abs=1e-6)  # no mask: all labelled
    # logits that score the question, padding or nothing do not matter
    unscored = labels[:, 1:] == IGNORE_INDEX
    noisy = logits.clone(); noisy[:, :-1][unscored] = 1e3 * torch.randn(int(unscored.sum()), 7); noisy[:, -1] = float("nan")
    assert rationale_lm_loss(noisy, labels, am).item() == pytest.approx(lm.item(), abs=1e-6)
    assert answer_loss(noisy, labels, am).item() == pytest.approx(ans.item(), abs=1e-6)
    # and the logits that score answer tokens do not move the rationale loss
    ans_pos = am[:, 1:]
    moved = logits.clone(); moved[:, :-1][ans_pos] += 5.0 * torch.randn(int(ans_pos.sum()), 7)
    assert rationale_lm_loss(moved, labels, am).item() == pytest.approx(lm.item(), abs=1e-6)
    assert answer_loss(moved, labels, am).item() != pytest.approx(ans.item(), abs=1e-6)
    with pytest.raises(ValueError, match="input coordinates"):
        answer_loss(logits, labels, am[:, 1:])


# ---- consistency KL --------------------------------------------------------------------------------
def test_consistency_kl_by_hand():
    assert consistency_kl(ST, TT, LAB2).item() == pytest.approx(kl(P_T, P_S), abs=1e-6)
    assert consistency_kl(ST, TT, LAB2, "reverse").item() == pytest.approx(kl(P_S, P_T), abs=1e-6)
    sq = lambda p: [math.sqrt(a) / sum(math.sqrt(b) for b in p) for a in p]
    for d, (p, q) in {"forward": (P_T, P_S), "reverse": (P_S, P_T)}.items():
        got = consistency_kl(ST, TT, LAB2, d, temperature=2.0).item()
        assert got == pytest.approx(4 * kl(sq(p), sq(q)), abs=1e-6)  # τ² = 4


def test_consistency_kl_masks_detach_and_grad():
    _, labels, _, s, t = toy_batch()
    s.requires_grad_(); t.requires_grad_()
    base = consistency_kl(s, t, labels)
    base.backward()
    assert t.grad is None and torch.isfinite(s.grad).all()
    assert torch.all(s.grad[:, -1] == 0)  # the last position predicts nothing
    unscored = labels[:, 1:] == IGNORE_INDEX
    t2 = t.detach().clone(); t2[:, :-1][unscored] = 50 * torch.randn(int(unscored.sum()), 7); t2[:, -1] = float("nan")
    assert consistency_kl(s, t2, labels).item() == pytest.approx(base.item(), abs=1e-6)
    none = consistency_kl(s, t, labels, reduction="none")
    assert none.shape == (2, 7) and torch.all(none[unscored] == 0)
    assert none.sum().item() == pytest.approx(consistency_kl(s, t, labels, reduction="sum").item(), rel=1e-6)


def test_kl_handles_ruled_out_tokens():
    p = torch.log_softmax(torch.tensor([[0.0, 1.0, float("-inf")]]), -1)
    q = torch.log_softmax(torch.tensor([[0.5, 0.0, 2.0]], requires_grad=True), -1)
    v = kl_rows(p, q)
    v.sum().backward()
    assert torch.isfinite(v).all()
    pp = p.exp()[0, :2].tolist(); qq = q.exp()[0].tolist()
    assert v.item() == pytest.approx(kl(pp, qq[:2]), abs=1e-6)
    assert kl_rows(q.detach(), p).item() == float("inf")  # Q has mass where P has none


def test_vocab_mismatch_error_and_vocab_slice():
    with pytest.raises(ValueError, match=r"student's logits have 5 entries and the teacher's 7"):
        consistency_kl(torch.zeros(1, 2, 5), torch.zeros(1, 2, 7), LAB2)
    with pytest.raises(ValueError, match=r"5 entries and the teacher's 7"):
        generalized_jsd_loss(torch.zeros(1, 2, 5), torch.zeros(1, 2, 7), LAB2)
    with pytest.raises(ValueError, match=r"5 entries and the teacher's 7"):
        cot_distillation_loss(torch.zeros(1, 2, 5), LAB2, torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, 7))
    t = torch.cat([TT, torch.full((1, 2, 3), 9.0)], -1)  # padded head: 3 extra logits
    assert consistency_kl(ST, t, LAB2, vocab=2).item() == pytest.approx(kl(P_T, P_S), abs=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        consistency_kl(ST, t, LAB2, vocab=4)
    with pytest.raises(ValueError, match="same tokens"):
        consistency_kl(ST, TT[:, :1], LAB2)
    with pytest.raises(ValueError, match="temperature"):
        consistency_kl(ST, TT, LAB2, temperature=0)
    with pytest.raises(ValueError, match="allowed"):
        consistency_kl(ST, TT, LAB2, direction="sideways")


# ---- hidden-state alignment ---------------------------------------------------------------------------
def test_hidden_alignment_by_hand():
    al = HiddenAlignment(2, 3)
    with torch.no_grad():
        al.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])); al.proj.bias.zero_()
    hs = torch.tensor([[[1.0, 2.0], [1.0, 0.0], [9.0, 9.0]]])
    ht = torch.tensor([[[1.0, 2.0, 5.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    m = torch.tensor([[True, True, False]])
    assert al(hs, ht, m).item() == pytest.approx((4 / 3 + 1 / 3) / 2, abs=1e-6)
    assert al(hs, ht, m, reduction="none")[0].tolist() == pytest.approx([4 / 3, 1 / 3, 0.0], abs=1e-6)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    al.kind = "cosine"
    want = ((1 - cos([1, 2, 3], [1, 2, 5])) + (1 - cos([1, 0, 1], [0, 0, 1]))) / 2
    assert al(hs, ht, m).item() == pytest.approx(want, abs=1e-6)
    same = torch.randn(1, 4, 3)
    assert hidden_alignment_loss(same, 2 * same, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert isinstance(HiddenAlignment(5, 5).proj, nn.Identity) and not list(HiddenAlignment(5, 5).parameters())


def test_hidden_alignment_errors():
    with pytest.raises(ValueError, match="student 2, teacher 3"):
        hidden_alignment_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="student width 3"):
        HiddenAlignment(2, 3)(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="allowed"):
        HiddenAlignment(2, 3, kind="l1")
    with pytest.raises(ValueError, match="same"):
        hidden_alignment_loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))


def test_hidden_alignment_learns_teacher_detached():
    torch.manual_seed(0)
    al = HiddenAlignment(8, 16, kind="cosine")
    opt = torch.optim.Adam(al.parameters(), lr=0.05)
    hs, ht = torch.randn(2, 5, 8), torch.randn(2, 5, 16, requires_grad=True)
    first = al(hs, ht).item()
    for _ in range(60):
        opt.zero_grad(); loss = al(hs, ht); loss.backward(); opt.step()
    assert loss.item() < 0.5 * first and ht.grad is None


# ---- the combined loss ------------------------------------------------------------------------------
def test_cot_distillation_loss_by_hand():
    stud = torch.tensor([[logs(1 / 4, 1 / 2, 1 / 4), logs(1 / 2, 1 / 4, 1 / 4), [0.0, 0.0, 0.0]]])
    teach = torch.tensor([[logs(1 / 3, 1 / 3, 1 / 3), logs(1 / 2, 1 / 4, 1 / 4), [0.0, 0.0, 0.0]]])
    lab, am = torch.tensor([[IGNORE_INDEX, 1, 2]]), torch.tensor([[False, False, True]])
    kl0 = kl([1 / 3] * 3, [1 / 4, 1 / 2, 1 / 4])
    total, parts = cot_distillation_loss(stud, lab, am, teach)
    assert set(parts) == {"lm", "answer", "consistency", "total"} and all(isinstance(v, float) for v in parts.values())
    assert parts["lm"] == pytest.approx(math.log(2), abs=1e-6)
    assert parts["answer"] == pytest.approx(math.log(4), abs=1e-6)
    assert parts["consistency"] == pytest.approx(kl0, abs=1e-6)
    assert total.item() == pytest.approx(math.log(2) + math.log(4) + 0.1 * kl0, abs=1e-6)
    total, _ = cot_distillation_loss(stud, lab, am, teach, w_answer=2.0, w_consistency=0.5, direction="reverse")
    assert total.item() == pytest.approx(math.log(2) + 2 * math.log(4) + 0.5 * kl([1 / 4, 1 / 2, 1 / 4], [1 / 3] * 3), abs=1e-6)
    total, parts = cot_distillation_loss(stud, lab, am)
    assert parts["consistency"] == 0.0 and total.item() == pytest.approx(3 * math.log(2), abs=1e-6)
    total, parts = cot_distillation_loss(stud, lab, am, teach, consistency="none")
    assert parts["consistency"] == 0.0


def test_cot_distillation_loss_consistency_only_on_rationale_and_grad():
    _, labels, am, s, t = toy_batch()
    s.requires_grad_()
    total, parts = cot_distillation_loss(s, labels, am, t)
    rat = labels.masked_fill(am, IGNORE_INDEX)
    assert parts["consistency"] == pytest.approx(consistency_kl(s, t, rat).item(), abs=1e-6)
    assert parts["lm"] == pytest.approx(rationale_lm_loss(s, labels, am).item(), abs=1e-6)
    total.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_cot_distillation_loss_hidden_and_errors():
    _, labels, am, s, _ = toy_batch()
    hs, ht = torch.randn(2, 8, 4), torch.randn(2, 8, 6)
    al = HiddenAlignment(4, 6)
    total, parts = cot_distillation_loss(s, labels, am, student_hidden=hs, teacher_hidden=ht, alignment=al)
    want = al(hs, ht, labels.masked_fill(am, IGNORE_INDEX) != IGNORE_INDEX).item()
    assert parts["consistency"] == pytest.approx(want, abs=1e-6)
    total.backward()
    assert al.proj.weight.grad is not None
    with pytest.raises(ValueError, match="needs teacher_logits"):
        cot_distillation_loss(s, labels, am, consistency="kl")
    with pytest.raises(ValueError, match="needs student_hidden"):
        cot_distillation_loss(s, labels, am, consistency="hidden")
    with pytest.raises(ValueError, match="allowed"):
        cot_distillation_loss(s, labels, am, consistency="kd")


# ---- step by step -------------------------------------------------------------------------------------
def test_step_by_step():
    ex = step_by_step_examples("Q: 3 + 4 ?", " 3 + 4 = 7", " #### 7")
    assert ex == [{"prompt": "[label] Q: 3 + 4 ?", "completion": " #### 7", "is_rationale": False},
                  {"prompt": "[rationale] Q: 3 + 4 ?", "completion": " 3 + 4 = 7", "is_rationale": True}]
    assert with_task_prefix("x", "rationale") == "[rationale] x"
    with pytest.raises(ValueError, match="allowed"):
        with_task_prefix("x", "answer")
    lg = torch.tensor([[logs(1 / 4, 1 / 2, 1 / 4), logs(1 / 3, 1 / 3, 1 / 3), [0.0, 0.0, 0.0]],
                       [logs(1 / 4, 1 / 2, 1 / 4), logs(1 / 2, 1 / 4, 1 / 4), [0.0, 0.0, 0.0]]])
    lb = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX], [IGNORE_INDEX, 1, 1]])
    r = torch.tensor([False, True])
    total, parts = step_by_step_loss(lg, lb, r)
    assert parts["label"] == pytest.approx(math.log(4), abs=1e-6)
    assert parts["rationale"] == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert total.item() == pytest.approx(0.5 * math.log(4) + 0.5 * 1.5 * math.log(2), abs=1e-6)
    total, _ = step_by_step_loss(lg, lb, r, alpha=0.2)
    assert total.item() == pytest.approx(0.2 * math.log(4) + 0.8 * 1.5 * math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        step_by_step_loss(lg, lb, r, alpha=-0.1)
    with pytest.raises(ValueError, match="is_rationale"):
        step_by_step_loss(lg, lb, torch.tensor([True]))


# ---- GKD ----------------------------------------------------------------------------------------------
def test_generalized_jsd_by_hand():
    for beta in (0.1, 0.5, 0.9):
        m = [beta * a + (1 - beta) * b for a, b in zip(P_T, P_S)]
        want = beta * kl(P_T, m) + (1 - beta) * kl(P_S, m)
        assert generalized_jsd_loss(ST, TT, LAB2, beta=beta).item() == pytest.approx(want, abs=1e-6)
    assert generalized_jsd_loss(ST, TT, LAB2, beta=0).item() == pytest.approx(kl(P_T, P_S), abs=1e-6)
    assert generalized_jsd_loss(ST, TT, LAB2, beta=1).item() == pytest.approx(kl(P_S, P_T), abs=1e-6)
    sq = lambda p: [math.sqrt(a) / sum(math.sqrt(b) for b in p) for a in p]
    m = [0.5 * a + 0.5 * b for a, b in zip(sq(P_T), sq(P_S))]
    want = 0.5 * kl(sq(P_T), m) + 0.5 * kl(sq(P_S), m)  # temperature, no τ² factor
    assert generalized_jsd_loss(ST, TT, LAB2, temperature=2.0).item() == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generalized_jsd_loss(ST, TT, LAB2, beta=1.1)


def test_generalized_jsd_bounded_and_masked():
    g = torch.Generator().manual_seed(1)
    s, t = 30 * torch.randn(2, 6, 40, generator=g), 30 * torch.randn(2, 6, 40, generator=g)
    d = generalized_jsd_loss(s, t, reduction="none")
    assert d.shape == (2, 5) and (d >= -1e-6).all() and (d <= math.log(2) + 1e-5).all()
    _, labels, _, s, t = toy_batch()
    base = generalized_jsd_loss(s, t, labels)
    unscored = labels[:, 1:] == IGNORE_INDEX
    s2 = s.clone(); s2[:, :-1][unscored] = float("nan"); s2[:, -1] = float("nan")
    assert generalized_jsd_loss(s2, t, labels).item() == pytest.approx(base.item(), abs=1e-6)



@pytest.fixture(scope="module")
def GKDTrainer():
    mod = pytest.importorskip("trl.experimental.gkd")
    return mod.GKDTrainer


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_generalized_jsd_matches_trl(GKDTrainer, beta, temperature):
    g = torch.Generator().manual_seed(int(beta * 10 + temperature * 100))
    s = (3 * torch.randn(4, 9, 13, generator=g)).requires_grad_()
    t = 3 * torch.randn(4, 9, 13, generator=g)
    lab = torch.randint(0, 13, (4, 9), generator=g); lab[:, :3] = IGNORE_INDEX; lab[3, 6:] = IGNORE_INDEX
    ours = generalized_jsd_loss(s, t, lab, beta=beta, temperature=temperature, shift=False)
    theirs = GKDTrainer.generalized_jsd_loss(s, t, lab, beta=beta, temperature=temperature)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)  # float32: summation order differs in the last bit
    s64, t64 = s.detach().double(), t.double()  # in float64 the two agree to far better than 1e-6
    ours64 = generalized_jsd_loss(s64, t64, lab, beta=beta, temperature=temperature, shift=False)
    assert ours64.dtype == torch.float64
    assert ours64.item() == pytest.approx(GKDTrainer.generalized_jsd_loss(s64, t64, lab, beta=beta, temperature=temperature).item(), abs=1e-10)
    g_ours, = torch.autograd.grad(ours, s)
    g_theirs, = torch.autograd.grad(theirs, s)
    assert torch.allclose(g_ours, g_theirs, atol=1e-6)
    ours_sum = generalized_jsd_loss(s, t, lab, beta=beta, temperature=temperature, shift=False, reduction="sum")
    assert ours_sum.item() == pytest.approx(GKDTrainer.generalized_jsd_loss(s, t, lab, beta=beta, temperature=temperature, reduction="sum").item(), rel=1e-6)


def test_generalized_jsd_shift_equals_trl_on_sliced(GKDTrainer):
    "With shift=True on unshifted HF tensors == TRL on logits[:, :-1] and labels[:, 1:]."
    _, labels, _, s, t = toy_batch()
    ours = generalized_jsd_loss(s, t, labels, beta=0.3)
    theirs = GKDTrainer.generalized_jsd_loss(s[:, :-1], t[:, :-1], labels[:, 1:], beta=0.3)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_on_policy_batch():
    picks = [on_policy_batch(s, 0.25, seed=3) for s in range(4000)]
    assert abs(sum(picks) / len(picks) - 0.25) < 0.03
    assert picks == [on_policy_batch(s, 0.25, seed=3) for s in range(4000)]  # a pure function of (seed, step)
    assert picks != [on_policy_batch(s, 0.25, seed=4) for s in range(4000)]
    assert not any(on_policy_batch(s, 0.0) for s in range(500)) and all(on_policy_batch(s, 1.0) for s in range(500))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        on_policy_batch(0, -0.5)
