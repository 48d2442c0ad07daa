"Tests of cotdistill.grpo: the loss against TRL's own code, advantages, KL, clipping, masking, rewards, the objective."
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import random
import re

import pytest
import torch

torch.set_num_threads(1)

from cotdistill.grpo import (FailureBank, GRPOConfig, GRPOObjective, GRPO_LOSS_TYPES, aggregate_loss, annealed_k,
                             bench_grpo_vs_trl, check_num_generations, clipped_surrogate, correctness_reward,
                             format_reward, group_advantages, grpo_dataset, grpo_loss, hierarchical_reward, k3_kl,
                             rollout, scaffold_prompt, shuffle_steps, split_steps, step_validity_reward,
                             structure_aware_mask, trl_grpo_loss)
from cotdistill.models import build_tokenizer, make_model
from cotdistill.tasks import get_task

trl = pytest.importorskip("trl")


def _inputs(seed, R=12, T=10, drift=0.3):
    g = torch.Generator().manual_seed(seed)
    lp = (-4 * torch.rand(R, T, generator=g)).requires_grad_()
    old = lp.detach() + drift * torch.randn(R, T, generator=g)
    ref = lp.detach() + 0.5 * torch.randn(R, T, generator=g)
    adv = torch.randn(R, generator=g)
    lens = torch.randint(0, T + 1, (R,), generator=g)            # includes an empty (fully masked) completion
    lens[0] = 0
    mask = (torch.arange(T)[None] < lens[:, None]).long()
    return lp, old, ref, adv, mask


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
@pytest.mark.parametrize("eps_high,beta", [(None, 0.0), (0.28, 0.04), (0.28, 0.0), (None, 0.1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_equals_trl(loss_type, eps_high, beta, seed):
    lp, old, ref, adv, mask = _inputs(seed)
    ours, _ = grpo_loss(lp, old, ref, adv, mask, loss_type, 0.2, eps_high, beta, max_completion_length=16)
    theirs = trl_grpo_loss(lp, old, ref, adv, mask, loss_type, 0.2, eps_high, beta, max_completion_length=16)
    assert abs(ours.item() - theirs.item()) < 1e-5, (ours.item(), theirs.item())
    g1, = torch.autograd.grad(ours, lp)
    g2, = torch.autograd.grad(theirs, lp)
    assert torch.allclose(g1, g2, atol=1e-6)


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
def test_loss_equals_trl_on_policy(loss_type):
    "μ = 1: old log-probs are the policy's own (TRL's default path when old_per_token_logps is None)."
    lp, _, ref, adv, mask = _inputs(3)
    ours, _ = grpo_loss(lp, None, ref, adv, mask, loss_type, 0.2, 0.28, 0.04, max_completion_length=10)
    theirs = trl_grpo_loss(lp, None, ref, adv, mask, loss_type, 0.2, 0.28, 0.04, max_completion_length=10)
    assert abs(ours.item() - theirs.item()) < 1e-5


def test_advantages_match_trl_formula():
    from trl.trainer.utils import nanstd
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 3, (24,), generator=g).float()
    for G in (2, 4, 8):
        grp = r.view(-1, G)
        want = ((grp - grp.mean(1, keepdim=True)) / (nanstd(grp, dim=1, keepdim=True) + 1e-4)).view(-1)
        assert torch.allclose(group_advantages(r, G, "group"), want, atol=1e-6)
        assert torch.allclose(group_advantages(r, G, "batch"), (grp - grp.mean(1, keepdim=True)).view(-1) / (nanstd(r) + 1e-4), atol=1e-6)
        assert torch.allclose(group_advantages(r, G, "none"), (grp - grp.mean(1, keepdim=True)).view(-1))
    same = group_advantages(torch.ones(8), 4)
    assert torch.equal(same, torch.zeros(8))
    with pytest.raises(ValueError, match="allowed"):
        group_advantages(r, 4, scale="rows")


@pytest.mark.parametrize("G", [1, 0, -3, 2.5, True])
def test_small_group_is_a_clear_error(G):
    with pytest.raises(ValueError, match=r"G >= 2.*allowed"):
        check_num_generations(G)
    if isinstance(G, int) and not isinstance(G, bool):
        with pytest.raises(ValueError, match="G >= 2"):
            GRPOConfig(num_generations=G)


def test_k3_kl():
    lp = torch.log(torch.tensor([[0.5, 0.1, 0.9]]))
    ref = torch.log(torch.tensor([[0.5, 0.3, 0.6]]))
    kl = k3_kl(lp, ref)
    ratio = torch.exp(ref - lp)
    assert torch.allclose(kl, ratio - torch.log(ratio) - 1)
    assert kl[0, 0] == 0 and (kl[0, 1:] > 0).all()
    # unbiased: E_{x~p}[k3] = KL(p || q) on a small discrete distribution
    p, q = torch.tensor([0.2, 0.5, 0.3]), torch.tensor([0.4, 0.4, 0.2])
    exact = (p * (p / q).log()).sum()
    est = (p * k3_kl(p.log(), q.log())).sum()
    assert torch.allclose(exact, est, atol=1e-6)


def test_clipping_and_clip_higher():
    old = torch.zeros(1, 5)
    ratio = torch.tensor([[0.5, 0.85, 1.0, 1.25, 1.5]])
    new = ratio.log().requires_grad_()
    loss, rho = clipped_surrogate(new, old, torch.tensor([1.0]), 0.2, 0.28)
    assert torch.allclose(rho, ratio)
    assert torch.allclose(loss, -torch.tensor([[0.5, 0.85, 1.0, 1.25, 1.28]]))
    loss.sum().backward()
    assert (new.grad != 0).tolist() == [[True, True, True, True, False]]   # A > 0: only above 1 + ε_high is clipped
    new.grad = None
    loss, _ = clipped_surrogate(new, old, torch.tensor([-1.0]), 0.2, 0.28)
    loss.sum().backward()
    assert (new.grad != 0).tolist() == [[False, True, True, True, True]]   # A < 0: only below 1 - ε_low is clipped
    _, st = grpo_loss(new, old, None, torch.tensor([1.0]), torch.ones(1, 5), epsilon_low=0.2, epsilon_high=0.28)
    assert st["clip_high"] == pytest.approx(0.2) and st["clip_low"] == 0.0


def test_aggregations_by_hand():
    pt = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert aggregate_loss(pt, m, "grpo").item() == pytest.approx((1.5 + 3.0) / 2)
    assert aggregate_loss(pt, m, "bnpo").item() == pytest.approx(15 / 6)
    assert aggregate_loss(pt, m, "dapo").item() == pytest.approx(15 / 6)
    assert aggregate_loss(pt, m, "dr_grpo", max_completion_length=8).item() == pytest.approx(15 / 16)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(pt, m, "dr_grpo")
    with pytest.raises(ValueError, match="allowed"):
        aggregate_loss(pt, m, "ppo")


@pytest.fixture(scope="module")
def setup():
    task = get_task("arith", min_steps=2, max_steps=2, max_operand=9, max_value=30, ops=["+", "-"], digit_order="msd")
    ds = task.splits(seed=0, n_train=32, n_validation=4, n_test=8, hard=False)
    tok = build_tokenizer(task.vocabulary_texts())
    return task, ds, tok


def test_truncated_completions_masked(setup):
    task, ds, tok = setup
    model = make_model("tiny", tok, seed=0)
    prompts = [task.format_prompt(q) for q in ds["train"]["question"][:2]]
    ro = rollout(model, tok, prompts, 3, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert ro["completion_ids"].shape[0] == 6 and ro["completion_mask"].shape[1] <= 4
    assert torch.equal(ro["completion_mask"].sum(1), ro["lengths"])
    # with mask_truncated_completions the objective zeroes the rows that hit the limit
    obj = GRPOObjective(tok, [lambda completions, **kw: [float(len(c)) for c in completions]],
                        GRPOConfig(num_generations=3, max_completion_length=4, beta=0.0, mask_truncated_completions=True))
    batch = {"prompt": prompts, "answer": ds["train"]["answer"][:2]}
    obj(model, batch)
    buf = obj.buffer[0]
    assert buf["logs"]["truncated"] > 0 and buf["truncated"].any()
    assert (buf["mask"][buf["truncated"]] == 0).all()                    # truncated rows count for nothing
    assert (buf["mask"][~buf["truncated"]].sum(1) > 0).all()             # finished rows keep their tokens
    obj2 = GRPOObjective(tok, obj.reward_funcs, GRPOConfig(num_generations=3, max_completion_length=4, beta=0.0, seed=0))
    obj2(model, batch)
    assert obj2.buffer[0]["mask"].sum() > buf["mask"].sum()             # without the option the truncated rows count


def test_rewards_semantics(setup):
    task, ds, tok = setup
    r = ds["test"][0]
    s = r["steps"]
    good = task.format_completion(r["rationale"], r["answer"])
    wrong_step = task.format_completion(r["rationale"].split(" ; ")[0] + f' ; {s[1]["a"]} {s[1]["op"]} {s[1]["b"]} = {int(s[1]["result"]) + 1}', r["answer"])
    long_good = task.format_completion(r["rationale_verbose"], r["answer"])
    wrong = task.format_completion(r["rationale"], str(int(r["answer"]) + 1))
    comps = [good, long_good, wrong, "no answer here", wrong_step]
    cols = dict(answer=[r["answer"]] * 5, question=[r["question"]] * 5)
    assert correctness_reward(task)(comps, **cols) == [1, 1, 0, 0, 1]
    ids = tok(comps, add_special_tokens=False)["input_ids"]
    h = hierarchical_reward(task, max_len=64, w=0.5)(comps, completion_ids=ids, **cols)
    assert h[0] > h[1] > 1 and h[2] == 0 and h[3] == 0                   # brevity only counts when correct
    assert h[0] == pytest.approx(1 + 0.5 * (1 - len(ids[0]) / 64))
    assert format_reward(task)(comps) == [1, 1, 1, 0, 1]
    v = step_validity_reward(task)(comps, **cols)
    assert v[:2] == [1.0, 1.0] and v[3] == 0.0 and v[4] == 0.5           # one of two steps wrong
    # TRL-style: unknown columns are accepted
    assert correctness_reward(task)([good], answer=[r["answer"]], prompts=["p"], extra=[1]) == [1.0]


def test_structure_aware_mask():
    concise = "5 + 3 = 8 ; 8 - 2 = 6 ; 6 * 4 = 24 ; 24 - 9 = 15"
    n_tok = 20
    for ratio in (0.0, 0.1, 0.25, 0.5, 0.8, 1.0):
        for seed in range(3):
            out = structure_aware_mask(concise, ratio, rng=seed)
            assert out.count("<mask>") == round(ratio * n_tok)
    # results go first, then the other numbers, then operators
    assert structure_aware_mask(concise, 4 / 20, rng=0) == "5 + 3 = <mask> ; 8 - 2 = <mask> ; 6 * 4 = <mask> ; 24 - 9 = <mask>"
    m = structure_aware_mask(concise, 12 / 20, rng=0)
    assert not re.search(r"\d", m) and m.count("=") == 4                  # all 12 numbers gone, operators kept
    verbose = "Step 1: Bob starts with 7 pens. Step 2: He buys 4 more, so 7 + 4 = 11. Step 3: He loses 2 pens, so 11 - 2 = 9. So Bob has 9 pens."
    words = re.findall(r"[A-Za-z]+", verbose)
    numbers = [t for t in re.findall(r"(?<!Step )\b\d+", verbose)]
    out = structure_aware_mask(verbose, 0.25, rng=1)
    n_hidden = out.count("<mask>")
    if n_hidden <= len(numbers):
        assert re.findall(r"[A-Za-z]+", out.replace("<mask>", "")) == words   # numbers before filler words
    assert structure_aware_mask(verbose, 0.3, rng=7) == structure_aware_mask(verbose, 0.3, rng=random.Random(7))
    assert len({structure_aware_mask(verbose, 0.5, rng=s) for s in range(6)}) > 1
    # step level
    st = structure_aware_mask(concise, 0.5, "step", rng=0)
    assert st.count("<mask>") == 2 and len(st.split(" ; ")) == 4
    assert structure_aware_mask("a b c", 0.5, mask_token="[M]").count("[M]") == 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        structure_aware_mask(concise, -0.1)
    with pytest.raises(ValueError, match="allowed"):
        structure_aware_mask(concise, 0.3, level="sentence")


def test_shuffle_and_split_steps():
    assert split_steps("a = 1 ; b = 2") == (["a = 1", "b = 2"], " ; ")
    assert split_steps("x\ny") == (["x", "y"], "\n")
    assert split_steps("One. Two is 2.5 here. Three!")[0] == ["One.", "Two is 2.5 here.", "Three!"]
    r = "1 + 1 = 2 ; 2 + 1 = 3 ; 3 + 1 = 4 ; 4 + 1 = 5"
    sh = shuffle_steps(r, 0)
    assert sorted(sh.split(" ; ")) == sorted(r.split(" ; ")) and sh == shuffle_steps(r, 0)


def test_failure_bank_and_scaffold():
    assert [annealed_k(s, 10, 2) for s in (0, 4, 5, 6, 10, 20)] == [2, 2, 1, 1, 0, 0]
    assert scaffold_prompt("Q:", "a ; b ; c", 2) == "Q: a ; b ;" and scaffold_prompt("Q:", "a ; b", 5) == "Q: a ;"
    bank = FailureBank(min_fails=2, capacity=2)
    rows = [{"id": f"q{i}", "question": f"Q{i}", "prompt": f"P{i}"} for i in range(3)]
    bank.update(rows, [0.0, 0.0, 1.0])
    assert len(bank) == 2 and bank.ready() == []
    bank.update(rows, [0.0, 0.0, 0.0])
    assert len(bank) == 2                                               # capacity: the oldest left
    assert set(bank.ready()) <= {"q0", "q1", "q2"} and len(bank.ready()) >= 1


def test_parameters_change(setup):
    from cotdistill.train import TrainConfig, train
    task, ds, tok = setup
    model = make_model("tiny", tok, seed=0)
    before = {k: v.clone() for k, v in model.named_parameters()}
    longer = lambda completions, **kw: [len(c) / 50 for c in completions]
    obj = GRPOObjective(tok, [hierarchical_reward(task, 12), longer], GRPOConfig(num_generations=4, max_completion_length=12), task=task)
    res = train(model, grpo_dataset(tok, task, ds["train"]), objective=obj, save_model=False,
                cfg=TrainConfig(max_steps=3, batch_size=4, lr=1e-2, warmup_steps=1, weight_decay=0.0, log_every=1, progress=False))
    assert res["steps"] == 3
    assert all(not torch.equal(v, before[k]) for k, v in model.named_parameters())
    assert all(not p.requires_grad for p in obj.ref.parameters())          # the reference stays frozen
    assert all(torch.equal(p, before[k]) for k, p in obj.ref.named_parameters())


def test_mu_inner_iterations_reuse_rollouts(setup):
    task, ds, tok = setup
    model = make_model("tiny", tok, seed=0)
    longer = lambda completions, **kw: [len(c) / 50 for c in completions]
    obj = GRPOObjective(tok, [longer], GRPOConfig(num_generations=4, max_completion_length=8, num_iterations=2, beta=0.0))
    data = grpo_dataset(tok, task, ds["train"])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    bufs = []
    for step in range(4):
        obj.on_step(step)
        batch = {k: v[step * 2:(step + 1) * 2] for k, v in data.items() if k != "input_ids"}
        loss, logs = obj(model, batch)
        bufs.append(obj.buffer[0])
        opt.zero_grad(); loss.backward(); opt.step()
    assert bufs[0] is bufs[1] and bufs[2] is bufs[3] and bufs[1] is not bufs[2]
    assert "old" in bufs[0]                                               # π_old fixed at sampling time


def test_objective_errors(setup):
    task, ds, tok = setup
    with pytest.raises(ValueError, match="allowed"):
        GRPOConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="reward"):
        GRPOObjective(tok, [])
    obj = GRPOObjective(tok, [correctness_reward(task)], GRPOConfig(num_generations=2, max_completion_length=4, beta=0.0))
    with pytest.raises(ValueError, match="prompt"):
        obj(make_model("tiny", tok), {"question": ["q"], "answer": ["1"]})


def test_bench_record_format():
    recs = bench_grpo_vs_trl(Gs=(4,), completions_per_step=8, max_completion_length=4, steps=2)
    assert [r["name"] for r in recs] == ["grpo_step_time_vs_trl_G4"]
    r = recs[0]
    assert set(r) == {"name", "ratio", "target", "unit", "detail"} and r["target"] == 2.0 and r["ratio"] > 0
    assert r["detail"]["trl_s_per_step"] > 0 and r["detail"]["kit_s_per_step"] > 0
