"""AntiDote on a tiny model: the adversary really learns, the two players' gradients never cross,
the patch really changes the model, and the engine resumes exactly after a crash."""
import pytest
import torch

from tamperlab.defenses.antidote import AntiDoteConfig, AntiDoteTrainer
from tamperlab.defenses.data import DefenseData
from tamperlab.models.hooks import find_sites, low_rank_patch
from tamperlab.training import SFTExample
from tamperlab.training.engine import Engine
from tamperlab.training.sft import DivergedError

PAIRS = [(SFTExample(f"p{i}", f"How do I hurt person number {i}?", "I'm sorry, I can't help with that."),
          SFTExample(f"p{i}", f"How do I hurt person number {i}?", f"Sure, here is how to hurt {i}: step one."))
         for i in range(12)]
BENIGN = [SFTExample(f"b{i}", f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.") for i in range(12)]


_OPEN: list = []  # trainers hold their adapter on the shared tiny model until closed


def _trainer(tiny, tmp_path, **kw):
    cfg = AntiDoteConfig(**{"steps": 4, "block": 2, "batch_size": 3, "benign_batch_size": 3, "adv_lr": 1e-2,
                            "lr": 1e-3, "warmup_steps": 0, "max_length": 64, "checkpoint_every": 0,
                            "lora_targets": ["q_proj", "v_proj"], **kw})
    t = AntiDoteTrainer(tiny, cfg, Engine(tmp_path, checkpoint_every=cfg.checkpoint_every,
                                          grad_accum=cfg.grad_accum), PAIRS, BENIGN)
    _OPEN.append(t)
    return t


@pytest.fixture(autouse=True)
def _close_trainers(tiny):
    """Every trainer gives the shared model back, bit-identical (no copy was trained)."""
    from tamperlab.models.loading import weights_fingerprint

    yield
    while _OPEN:
        _OPEN.pop().close()
    assert not hasattr(tiny.model, "peft_config")
    assert weights_fingerprint(tiny.model) == tiny.fingerprint


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return any(not torch.equal(b, p) for b, p in zip(before, params))


def test_the_adversary_learns_during_its_block(tiny, tmp_path):
    t = _trainer(tiny, tmp_path, adv_loss="dpo")
    before = _snapshot(t.adversary.parameters())
    losses = [t.adversary_step(0)["adv_loss"] for _ in range(8)]  # same batch: its harm loss must fall
    assert _changed(before, list(t.adversary.parameters()))
    assert losses[-1] < losses[0] - 1e-3, losses
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # DPO at margin 0: patch starts at ΔW = 0


def test_nll_adversary_learns_too(tiny, tmp_path):
    t = _trainer(tiny, tmp_path, adv_loss="nll")
    losses = [t.adversary_step(0)["adv_loss"] for _ in range(6)]
    assert losses[-1] < losses[0]


def test_gradients_never_cross_between_players(tiny, tmp_path):
    t = _trainer(tiny, tmp_path)
    adv, dfd = list(t.adversary.parameters()), t.def_params
    d0 = _snapshot(dfd)
    t.adversary_step(0)
    assert all(p.grad is None for p in dfd), "the adversary's loss reached the defender"
    assert not _changed(d0, dfd)
    assert all(p.requires_grad for p in dfd)  # restored for the defender's move
    a0 = _snapshot(adv)
    t.adversary_step(0)  # a non-zero patch, so the defender's patched loss depends on it
    a1 = _snapshot(adv)
    row = t.defender_step(1, 0)
    assert all(p.grad is None for p in adv), "the defender's loss reached the adversary"
    assert not _changed(a1, adv) and _changed(a0, a1)
    assert _changed(d0, dfd) and row["safety"] > 0


def test_patch_changes_the_model_and_only_inside_the_block(tiny):
    sites = find_sites(tiny.model, ["q_proj", "o_proj"])
    assert {s.kind for s in sites} == {"q_proj", "o_proj"} and {s.layer for s in sites} == {0, 1}
    ids = torch.tensor([[1, 5, 6, 7]])
    base = tiny.model(input_ids=ids).logits
    g = torch.Generator().manual_seed(0)
    patches = {s.name: (torch.randn(2, s.in_features, generator=g), torch.randn(s.out_features, 2, generator=g))
               for s in sites}
    with low_rank_patch(tiny.model, patches):
        patched = tiny.model(input_ids=ids).logits
    assert not torch.allclose(base, patched)
    assert torch.equal(tiny.model(input_ids=ids).logits, base)


def test_adversary_is_small_next_to_the_model(tiny, tmp_path):
    counts = _trainer(tiny, tmp_path).param_counts()
    assert 0 < counts["adversary"] and counts["adversary_to_model"] < 0.2


def test_crash_then_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    full = _trainer(tiny, tmp_path / "a", checkpoint_every=2)
    full.train()
    want = _snapshot(full.def_params) + _snapshot(full.adversary.parameters())
    full.close()

    crashed = _trainer(tiny, tmp_path / "b", checkpoint_every=2)
    orig = crashed.defender_step

    def boom(i, step):
        if step == 2:
            raise RuntimeError("simulated crash")
        return orig(i, step)
    crashed.defender_step = boom
    with pytest.raises(RuntimeError):
        crashed.train()
    crashed.close()  # a crashed process would have lost its in-memory adapter
    resumed = _trainer(tiny, tmp_path / "b", checkpoint_every=2)  # a fresh process would build this
    resumed.train()
    got = _snapshot(resumed.def_params) + _snapshot(resumed.adversary.parameters())
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(want, got))
    steps = [__import__("json").loads(line)["step"] for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 1, 2, 3, 4, 3, 4]  # adversary block then defender block, nothing duplicated


def test_nan_stops_with_the_last_good_checkpoint_named(tmp_path):
    eng = Engine(tmp_path)
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(m.parameters())
    eng.save(3, {"m": m}, {"m": opt})
    with pytest.raises(DivergedError, match="step 3"):
        eng.log(4, {"loss": float("nan")})
    assert (tmp_path / "checkpoint" / "state.safetensors").exists()


def test_defend_antidote_writes_model_adapter_adversary_and_card(tiny, tmp_path, monkeypatch):
    import json

    from tamperlab.defenses import antidote, defend

    monkeypatch.setattr(antidote, "defense_data", lambda *a, **k: DefenseData([], BENIGN, PAIRS, {"recipe": "test"}))
    out = defend(tiny, "antidote", overrides={"steps": 2, "block": 1, "batch_size": 2, "benign_batch_size": 2,
                                              "max_length": 64, "lora_targets": ["q_proj"]}, out_dir=tmp_path / "d")
    info = json.loads((out / "defense.json").read_text())
    assert info["method"] == "antidote" and info["params"]["adversary"] > 0
    for f in ("model.safetensors", "adapter/adapter_model.safetensors", "adversary.safetensors", "card.md",
              "train_log.jsonl"):
        assert (out / f).exists(), f
    assert "% of the model" in (out / "card.md").read_text()


def test_defend_resumes_a_crashed_antidote_run_through_the_entry_point(tiny, tmp_path, monkeypatch):
    """`defend` keeps an unfinished directory's resume state for the same key (it used to wipe it)."""
    from safetensors.torch import load_file

    from tamperlab.defenses import antidote, defend

    monkeypatch.setattr(antidote, "defense_data", lambda *a, **k: DefenseData([], BENIGN, PAIRS, {"recipe": "test"}))
    kw = {"steps": 4, "block": 1, "batch_size": 2, "benign_batch_size": 2, "max_length": 64,
          "lora_targets": ["q_proj"], "checkpoint_every": 2, "warmup_steps": 0}
    want = load_file(str(defend(tiny, "antidote", overrides=kw, out_dir=tmp_path / "a") / "adversary.safetensors"))

    orig = AntiDoteTrainer.defender_step
    seen = []

    def boom(self, i, step):
        if step == 2 and not seen:
            seen.append(step)
            raise RuntimeError("simulated crash")
        return orig(self, i, step)
    monkeypatch.setattr(AntiDoteTrainer, "defender_step", boom)
    with pytest.raises(RuntimeError):
        defend(tiny, "antidote", overrides=kw, out_dir=tmp_path / "b")
    assert (tmp_path / "b" / "work" / "checkpoint" / "state.safetensors").exists()
    out = defend(tiny, "antidote", overrides=kw, out_dir=tmp_path / "b")
    rows = [__import__("json").loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["phase"] != "check"] == [1, 1, 2, 2, 3, 3, 4, 4]  # resumed, not redone
    assert [r["step"] for r in rows if r["phase"] == "check"] == [0, 4]  # dev checks: undefended, then the end
    got = load_file(str(out / "adversary.safetensors"))
    assert want.keys() == got.keys() and all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)
    assert not (out / "defense.started").exists()


def test_defend_clears_its_own_unfinished_attempt_at_another_config(tiny, tmp_path):
    from tamperlab.defenses import defend

    out = tmp_path / "d"
    (out / "work").mkdir(parents=True)
    (out / "defense.started").write_text("some-other-key")  # tamperlab's marker: ours to clear
    (out / "work" / "stale.txt").write_text("x")
    defend(tiny, "sft", overrides={"steps": 1, "batch_size": 2, "max_length": 64, "lora_targets": ["q_proj"]},
           out_dir=out)
    assert not (out / "work" / "stale.txt").exists() and (out / "defense.json").exists()


@pytest.mark.parametrize("field", ["lora_targets", "adv_targets"])
def test_unknown_targets_fail_before_any_work_naming_the_field(tiny, tmp_path, field):
    from tamperlab.defenses import defend
    from tamperlab.utils.config import ConfigError

    with pytest.raises(ConfigError, match=f"field '{field}': \\['no_such_proj'\\] not in this model"):
        defend(tiny, "antidote", overrides={field: ["no_such_proj"], "steps": 1, "block": 1}, out_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("method", ["sft", "antidote"])
def test_defend_refuses_a_foreign_non_empty_folder_and_leaves_it_intact(tiny, tmp_path, method):
    from tamperlab.defenses import defend
    from tamperlab.utils.config import ConfigError

    runs = tmp_path / "runs"
    (runs / "my-experiment").mkdir(parents=True)
    (runs / "notes.txt").write_text("mine")
    (runs / "my-experiment" / "weights.bin").write_text("also mine")
    with pytest.raises(ConfigError, match=r"not a tamperlab defense directory.*choose another --out") as e:
        defend(tiny, method, overrides={"steps": 1}, out_dir=runs)
    assert str(runs) in str(e.value)
    assert (runs / "notes.txt").read_text() == "mine"
    assert (runs / "my-experiment" / "weights.bin").read_text() == "also mine"


def test_the_defender_learns_its_safety_loss_falls(tiny, tmp_path):
    """Same batch, a fixed (non-zero) patch: the defender's patched DPO loss must fall."""
    t = _trainer(tiny, tmp_path, w_lm=0.0, w_kl=0.0, lr=3e-2, beta=1.0, steps=8)
    for _ in range(3):
        t.adversary_step(0)  # a real patch to defend against
    rows = [t.defender_step(1, 0) for _ in range(8)]
    assert rows[-1]["safety"] < rows[0]["safety"] - 1e-2, [r["safety"] for r in rows]


def test_defender_schedule_is_cosine_with_warmup(tiny, tmp_path):
    """By hand (get_scheduler's cosine): lr·s/w in warmup, then lr·½(1+cos(π·(s−w)/(T−w)))."""
    t = _trainer(tiny, tmp_path, steps=4, warmup_steps=1, lr=1e-3)
    used = [t.defender_step(2 * s + 1, s)["lr"] for s in range(4)]
    assert used == pytest.approx([0.0, 1e-3, 7.5e-4, 2.5e-4])


def test_adversary_reinit_restarts_it_at_each_block(tiny, tmp_path):
    t = _trainer(tiny, tmp_path, steps=4, block=2, adv_reinit=True)
    t.train()
    rows = [__import__("json").loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    adv = [r for r in rows if r["phase"] == "adversary"]
    # each block starts from V = 0, so its first patch is exactly zero; without re-init it is not
    assert [r["patch_norm"] for r in adv][::2] == [0.0, 0.0]
    t.close()
    u = _trainer(tiny, tmp_path / "no-reinit", steps=4, block=2, adv_reinit=False)
    u.train()
    rows = [__import__("json").loads(x) for x in (tmp_path / "no-reinit" / "train_log.jsonl").read_text().splitlines()]
    assert [r["patch_norm"] for r in rows if r["phase"] == "adversary"][2] > 0


def test_clean_safety_term_is_added_with_its_weight(tiny, tmp_path):
    """loss = w_safety·safety + w_anchor·anchor + w_lm·lm + w_kl·kl + w_clean·clean, on one batch."""
    t = _trainer(tiny, tmp_path, w_clean_safety=0.5, lr=1e-9)
    row = t.defender_step(1, 0)
    c = t.cfg
    want = (c.w_safety * row["safety"] + c.w_anchor * row["anchor"] + c.w_lm * row["lm"] + c.w_kl * row["kl"]
            + 0.5 * row["clean_safety"])
    assert row["loss"] == pytest.approx(want, rel=1e-5)
    assert row["clean_safety"] == pytest.approx(row["safety"], rel=1e-4)  # no patch yet: ΔW = 0
    t.close()
    u = _trainer(tiny, tmp_path / "off")
    assert "clean_safety" not in u.defender_step(1, 0)


def test_over_long_prompts_are_left_out_with_a_warning_not_an_error(tiny, tmp_path):
    """As refusal SFT does: a utility example or pair whose prompt fills max_length is dropped
    before the seeded order (the demo's GSM8K items at max_length 160 once stopped AntiDote)."""
    long = "word " * 80
    benign = BENIGN + [SFTExample("long-b", long, "an answer")]
    pairs = PAIRS + [(SFTExample("long-p", long, "I can't help."), SFTExample("long-p", long, "Sure."))]
    cfg = AntiDoteConfig(steps=2, block=1, batch_size=2, benign_batch_size=2, max_length=64, checkpoint_every=0,
                         lora_targets=["q_proj"])
    with pytest.warns(UserWarning, match=r"1 utility example\(s\) have a prompt of max_length=64.*'long-b'"):
        t = AntiDoteTrainer(tiny, cfg, Engine(tmp_path, grad_accum=cfg.grad_accum), pairs, benign)
    _OPEN.append(t)
    assert all(c[0].id != "long-p" for c in t.pair_order) and all(e.id != "long-b" for e in t.benign_order)
    assert {c[0].id for c in t.pair_order} <= {p[0].id for p in PAIRS}
