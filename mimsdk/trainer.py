"""``Trainer``: checkpointed, exactly resumable MAE pre-training on one device or under torchrun.

A run directory holds:

    recipe.yaml            the resolved recipe
    checkpoint.pt          model, optimiser, scaler, step, RNG, history (atomic)
    model/                 config.json + model.safetensors, the latest weights
    metrics.csv, tb/       step, loss, lr, images/s (+ eval loss, kNN when measured)
    recon/                 reconstruction pictures
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mimsdk import checkpoint as ckpt
from mimsdk.adapter import get_adapter
from mimsdk.atomic import atomic_write
from mimsdk.config import ConfigError, Recipe, TrainConfig, load_recipe
from mimsdk.continued import StartingPoint, adopt, adopt_public, load_into
from mimsdk.data import ResumableSampler, SeededDataset
from mimsdk.distributed import autocast_dtype, barrier, init_processes, mean_across, pick_device
from mimsdk.errors import DataError
from mimsdk.hub import load_model
from mimsdk.hub.client import looks_local
from mimsdk.hub.public_weights import read_public
from mimsdk.model import MaskedAutoencoder, create_model
from mimsdk.nonfinite import NonFiniteGuard
from mimsdk.optim import lr_at, param_groups, set_lr
from mimsdk.parallel import as_number, parallelize, plain_batch_norm, prepare_blocks, remove_old_shards
from mimsdk.probe import held_out_metrics
from mimsdk.run_log import TRAIN_COLUMNS, RunLog, closing_summary, run_summary, save_picture
from mimsdk.serialization import check_size, save_model
from mimsdk.throughput import Throughput, TimedBatches, count_flops, waiting

log = logging.getLogger(__name__)

PICTURE_SAMPLES = 8


@dataclass
class PretrainResult:
    """What ``pretrain`` returns: the trained model (eval mode), its run directory and the logged history."""

    model: MaskedAutoencoder
    run_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    recipe: Recipe | None = None

    def __repr__(self) -> str:  # the model's and the history's own reprs run to pages
        last = self.history[-1] if self.history else {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "step")
        return f"PretrainResult(run_dir='{self.run_dir}', steps={last.get('step', 0)}, last: {shown or 'none'})"


class Trainer:
    """One pre-training run. ``Trainer(recipe, out).fit()`` or ``Trainer.resume(out).fit()``.

    ``init`` (a model, a model or run directory, or a Hub repo id) continues pre-training from that
    model: its config replaces ``recipe.model`` (then ``init_overrides``, model fields, apply on top)
    and its weights replace the random ones; an encoder-only model gets a freshly initialised decoder.
    Public MAE weights (transformers' ViTMAE or VideoMAE, a timm ViT) keep the recipe's model section,
    which must have their architecture, and adapt to its channels and input size (:func:`adopt_public`).
    """

    def __init__(
        self, recipe: Recipe, out: str | Path | None = None, *, init: str | Path | MaskedAutoencoder | None = None,
        init_revision: str | None = None, init_overrides: dict[str, Any] | None = None, _resuming: bool = False,
    ) -> None:  # fmt: skip
        self.recipe = recipe
        self._start: StartingPoint | None = None
        if init is not None:  # continued pre-training: the model's config and weights replace the recipe's
            public = None if isinstance(init, MaskedAutoencoder) else read_public(init, init_revision, recipe.model)
            if public is not None:  # ViTMAE, VideoMAE or timm weights: their architecture, the recipe's data
                self._start = adopt_public(recipe, public)
            else:
                source = init if isinstance(init, MaskedAutoencoder) else load_model(init, revision=init_revision)
                hub_id = init if isinstance(init, str) and not looks_local(init) else None
                self._start = adopt(recipe, source, init_overrides or {}, base_model=hub_id)
            log.info("continuing pre-training from %s", init if isinstance(init, str | Path) else "a model")
        self.device = pick_device(recipe.train.device)
        self.procs = init_processes(self.device, group=recipe.train.parallel == "fsdp")
        if self.device.type == "cuda" and self.procs.world > 1:
            self.device = torch.device("cuda", self.procs.local_rank)
        self.adapter = get_adapter(recipe.data.modality)  # the registry's, by name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(out) if out is not None else Path("runs") / f"{recipe.name}-{stamp}"
        if not _resuming and (self.run_dir / ckpt.CHECKPOINT).exists():
            raise FileExistsError(
                f"run directory {self.run_dir} already holds a run; resume it (mimsdk resume {self.run_dir}) "
                "or choose another --out"
            )
        self._build_data()
        self._build_model()

    # -- set-up ---------------------------------------------------------------

    def _build_data(self) -> None:
        cfg = self.recipe
        path = cfg.data.path or self.adapter.sample_path()
        if path is None:
            raise DataError(f"data.path is not set and the {cfg.data.modality} adapter ships no sample")
        # The shipped sample comes with a held-out split; a user's data are held out only when asked.
        eval_path = cfg.data.eval_path or (self.adapter.sample_eval_path() if cfg.data.path is None else None)
        self.data_path, self.eval_path = Path(path), Path(eval_path) if eval_path else None
        # Fails here, before any training, on a missing, empty or unreadable folder.
        self.train_set = SeededDataset(self.adapter.dataset(path, cfg.data, cfg.model, train=True), cfg.train.seed)
        self.view_set = self.adapter.dataset(path, cfg.data, cfg.model, train=False)
        self.eval_set = self.adapter.dataset(eval_path, cfg.data, cfg.model, train=False) if eval_path else None
        self.global_batch = cfg.data.batch_size * self.procs.world
        self.batches_per_epoch = ResumableSampler.batches_per_epoch(len(self.train_set), self.global_batch)
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{self.data_path} has {len(self.train_set)} usable samples, fewer than one global batch of "
                f"{self.global_batch} (data.batch_size × processes); lower data.batch_size"
            )
        t = cfg.train
        steps_per_epoch = self.batches_per_epoch / t.accum_steps
        if t.max_steps is None and t.epochs is None:
            raise ConfigError("train.max_steps or train.epochs must be set")
        self.total_steps = t.max_steps if t.max_steps is not None else max(1, math.ceil(t.epochs * steps_per_epoch))
        self.warmup_steps = t.warmup_steps if t.warmup_steps is not None else round(t.warmup_epochs * steps_per_epoch)
        effective = self.global_batch * t.accum_steps
        self.peak_lr = t.lr if t.lr is not None else t.base_lr * effective / 256

    def _build_model(self) -> None:
        cfg = self.recipe
        cfg.model.metadata = {**self.adapter.metadata(cfg.data, cfg.model), **cfg.model.metadata}
        torch.manual_seed(cfg.train.seed)
        self.model = create_model(check_size(cfg.model))  # a model too big to build is refused by field
        if self._start is not None:
            load_into(self.model, self._start)
            self._start = None
        self.model = self.model.to(self.device)
        t = cfg.train
        self.autocast = autocast_dtype(t.precision, self.device)
        prepare_blocks(self.model, t.activation_checkpointing, t.compile)
        self.spread = parallelize(self.model, t.parallel, self.procs, self.device, self.autocast)
        self.ddp = self.spread.module  # what a training step calls: the model, or its DDP wrapper
        groups = param_groups(self.model, t.weight_decay, self.model.no_weight_decay())
        fused = self.device.type == "cuda" and not self.spread.sharded
        self.optimizer = torch.optim.AdamW(groups, lr=self.peak_lr, betas=tuple(t.betas), fused=fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast is torch.float16)
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk
        self.history: list[dict[str, float]] = []
        self.guard = NonFiniteGuard(t.on_nonfinite, t.max_nonfinite)

    @classmethod
    def resume(cls, run_dir: str | Path, changes: dict[str, Any] | None = None) -> Trainer:
        """A trainer restored from ``run_dir``'s checkpoint: model, optimiser, scaler, RNG, step, history.

        ``changes`` (nested recipe overrides) may extend the run (``train.max_steps``) or change how often it
        logs, checkpoints and draws; any other change is refused by name, since the checkpoint was made under
        the recipe it holds. A longer run keeps its warm-up and stretches the cosine schedule to the new end
        from the resumed step on, so its remaining learning rates differ from a run planned that long.
        """
        run_dir = Path(run_dir)
        state = ckpt.read_checkpoint(run_dir)
        recipe = load_recipe(state["recipe"])
        if changes:
            recipe = ckpt.resumable(recipe, load_recipe(state["recipe"], changes), state["step"])
        trainer = cls(recipe, run_dir, _resuming=True)
        if trainer.procs.main:  # leftovers of writes a kill interrupted; rank 0 alone, as it alone writes
            ckpt.remove_stale_writes(run_dir)
        trainer._restore(state)
        trainer.guard.skipped, trainer.guard.rollbacks = state.get("skipped", 0), state.get("rollbacks", 0)
        return trainer

    def _restore(self, state: dict[str, Any]) -> None:
        """Model, optimiser, scaler, step, history and random state from a checkpoint."""
        self.spread.load_resume_state(self.optimizer, state, self.run_dir)
        self.scaler.load_state_dict(state["scaler"])
        self.step = self.saved_step = state["step"]
        self.history = state["history"]
        ckpt.restore_random_state(state)

    # -- the loop -------------------------------------------------------------

    def _batches(self, micro: int):
        """Micro-batches from global micro-batch index ``micro`` on, crossing epochs, endlessly."""
        data, t = self.recipe.data, self.recipe.train
        order_seed = t.seed + 1_000_003 * self.guard.rollbacks  # a rollback re-draws the batch order
        sampler = ResumableSampler(len(self.train_set), data.batch_size, order_seed, *self.procs.place, micro)
        loader = DataLoader(
            self.train_set, batch_size=data.batch_size, sampler=sampler, num_workers=data.num_workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if data.num_workers else None,
            generator=torch.Generator().manual_seed(t.seed),  # keeps the global RNG untouched
        )  # fmt: skip
        return TimedBatches(iter(loader), self.device)

    def _noise(self, micro: int, batch: int) -> dict[str, torch.Tensor]:
        """This rank's rows of the global batch's masking noise, a function of (seed, micro-batch).

        Whatever else the model draws per batch (the decoded tokens, under partial decoding) comes with it.
        """
        gen = torch.Generator().manual_seed(self.recipe.train.seed * 1_000_003 + micro)
        first = self.procs.rank * batch
        noises = self.model.draw_noise(self.global_batch, gen)
        return {k: v[first : first + batch].to(self.device, non_blocking=True) for k, v in noises.items()}

    def fit(self, until: int | None = None) -> PretrainResult:
        """Train to ``train.max_steps`` (or stop early after step ``until``, checkpointed, to resume later)."""
        t: TrainConfig = self.recipe.train
        stop = self.total_steps if until is None else min(until, self.total_steps)
        main = self.procs.main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / "recipe.yaml", lambda p: Path(p).write_text(self.recipe.to_yaml()))
        run_log = RunLog(self.run_dir, self.eval_set is not None, self.step) if main else None
        if run_log:
            run_log.restart(self.history, lambda row: self._logged(row, self.step))  # keeps the row of the stop
            tqdm.write(run_summary(self), file=sys.stderr)
        meter = self._meter()
        if run_log:
            tqdm.write(f"throughput: {meter.describe()}", file=sys.stderr)
        batches = self._batches(self.step * t.accum_steps)
        # In a log file rather than a terminal, a bar redrawn every step would be a line per step.
        every = 0.1 if sys.stderr.isatty() else 30.0
        bar = tqdm(
            total=self.total_steps, initial=self.step, disable=not main, desc=self.recipe.name, unit="step",
            mininterval=every, file=sys.stderr,
        )  # fmt: skip
        self.ddp.train()
        with bar:  # closed on an error too, so an error message starts a line of its own
            while self.step < stop:
                started = time.perf_counter()
                lr = lr_at(self.step, self.peak_lr, t.min_lr, self.warmup_steps, self.total_steps)
                set_lr(self.optimizer, lr)
                self.model.progress = self.step / self.total_steps
                loss, grad_norm = self._forward_backward(batches)
                verdict = self.guard.judge(self.step + 1, loss, grad_norm, self.saved_step)
                if verdict == "rollback":
                    batches = self._roll_back(run_log)
                    continue
                if verdict == "apply":  # a skipped step's batch is spent and nothing of it is applied
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.model.after_step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                rates = meter.rates(self.global_batch * t.accum_steps, time.perf_counter() - started, batches.take())
                row = {"step": self.step, "loss": loss, "lr": lr, **rates}
                self.history.append(row)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rates['images_per_s']:.0f}",
                                data=waiting(rates["data_wait"]), refresh=False)  # fmt: skip
                done, end = self.step == stop, self.step == self.total_steps
                if self._due(t.probe_every, end):
                    row.update(self._evaluate())
                if main and self._logged(row, stop):
                    run_log.write(row)
                if self._due(t.recon_every, end) and (main or self.spread.sharded):
                    self.save_picture(run_log)
                if self._due(t.ckpt_every, done):  # weights are checked on every rank, so all roll back together
                    if self.guard.judge_weights(self.step, self.model, self.saved_step) == "rollback":
                        batches = self._roll_back(run_log)
                        continue
                    self.save_checkpoint()
                self.ddp.train()
        if run_log:
            run_log.close()
            tqdm.write(closing_summary(self.history), file=sys.stderr)
        barrier(self.procs)
        if not self.spread.sharded:  # FSDP keeps its hold on the layers it shards
            plain_batch_norm(self.model)
        self.model.eval()
        return PretrainResult(self.model, self.run_dir, self.history, self.recipe)

    def _forward_backward(self, batches: Iterator) -> tuple[float, float]:
        """One step's micro-batches forward and backward: the loss averaged over processes, and the norm of
        the gradients (clipped to ``train.clip_grad`` when set) that the optimiser would apply."""
        t = self.recipe.train
        loss_sum = torch.zeros((), device=self.device)
        for a in range(t.accum_steps):
            micro = self.step * t.accum_steps + a
            x = next(batches)[0].to(self.device, non_blocking=True)
            if (micro + 1) % self.batches_per_epoch == 0:  # the epoch's last batch: its skipped files are known
                self._report_skipped(micro // self.batches_per_epoch)
            last = a == t.accum_steps - 1
            with self.spread.no_sync(last):
                with torch.autocast(self.device.type, self.autocast, enabled=self.autocast is not None):
                    out = self.ddp(x, **self._noise(micro, x.shape[0]))
                self.scaler.scale(out.loss / t.accum_steps).backward()
            loss_sum += out.loss.detach()
        self.scaler.unscale_(self.optimizer)
        grads = [p for p in self.model.parameters() if p.grad is not None]
        if t.clip_grad:
            norm = torch.nn.utils.clip_grad_norm_(grads, t.clip_grad)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in grads])
        return mean_across(loss_sum / t.accum_steps, self.procs).item(), as_number(norm)

    def _meter(self) -> Throughput:
        """Model FLOPs of one micro-batch's forward and backward, counted once on real samples. In eval mode
        and with the random state forked, so that nothing (batch-norm statistics, generators) moves."""
        b = self.recipe.data.batch_size
        x = torch.stack([self.view_set[i % len(self.view_set)][0] for i in range(b)]).to(self.device)
        self.model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            with torch.autocast(self.device.type, self.autocast, enabled=self.autocast is not None):
                flops = count_flops(lambda: self.model(x, **self._noise(0, b)).loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train()
        return Throughput(flops / b, self.model.num_tokens, self.procs.world, self.device, self.autocast)

    def _report_skipped(self, epoch: int) -> None:
        """Say how many samples of ``epoch`` were replaced because their files failed to load (named above)."""
        skipped = torch.tensor(float(self.train_set.skipped_in(epoch)), device=self.device)
        count = round(float(mean_across(skipped, self.procs)) * self.procs.world)
        if count and self.procs.main:
            tqdm.write(f"epoch {epoch + 1}: {count} sample(s) replaced by the next good one", file=sys.stderr)

    def _roll_back(self, run_log: RunLog | None) -> Iterator:
        """Back to the checkpoint on disk, with the batch order the new rollback count draws."""
        self._restore(ckpt.read_checkpoint(self.run_dir))
        if run_log:
            run_log.restart(self.history, lambda row: self._logged(row, self.step))  # keeps the row of the stop
        return self._batches(self.step * self.recipe.train.accum_steps)

    def _due(self, every: int, done: bool) -> bool:
        return done or (every > 0 and self.step % every == 0)

    def _logged(self, row: dict[str, float], last: int) -> bool:
        """Whether metrics.csv gets ``row``: every ``log_every`` steps, the last, and any with measurements."""
        return row["step"] % self.recipe.train.log_every == 0 or row["step"] == last or len(row) > len(TRAIN_COLUMNS)

    # -- measurements ---------------------------------------------------------

    def _evaluate(self) -> dict[str, float]:
        """Held-out masked loss and kNN accuracy (when labels exist), measured on rank 0."""
        if self.eval_set is None:
            return {}
        batch, batches = self.recipe.data.batch_size, self.recipe.train.eval_batches
        result = {}
        if self.procs.main or self.spread.sharded:  # a sharded model evaluates on every process together
            with self.spread.gathered():
                result = held_out_metrics(self.model, self.view_set, self.eval_set, batch, batches)
        barrier(self.procs)
        return result

    def picture_batch(self) -> torch.Tensor:
        """The samples every picture of the run shows: spread over the data (a seeded draw, not the first
        files in sorted order, which are often one class), held-out ones when there are."""
        source = self.eval_set or self.view_set
        return torch.stack([source[i][0] for i in self.picture_indices(len(source))])

    def picture_indices(self, size: int) -> list[int]:
        chosen = torch.randperm(size, generator=torch.Generator().manual_seed(self.recipe.train.seed))
        return sorted(chosen[:PICTURE_SAMPLES].tolist())

    @torch.no_grad()
    def save_picture(self, run_log: RunLog | None = None) -> Path | None:
        """Reconstructions of the picture batch under one fixed mask, in ``recon/`` (and TensorBoard)."""
        self.model.eval()
        x = self.picture_batch().to(self.device)
        seed = torch.Generator().manual_seed(self.recipe.train.seed)
        noise = self.model.masker.noise(x.shape[0], self.model.num_tokens, seed).to(self.device)
        with self.spread.gathered():
            recon = self.model.reconstruct(x, noise=noise)
        if not self.procs.main:
            return None
        return save_picture(self.run_dir / "recon", self.adapter.picture(recon, self.model.config), self.step, run_log)

    # -- persistence ------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write the checkpoint and the model directory; the previous checkpoint stays whole until then.
        Every process calls it (a sharded model's state is gathered from all); rank 0 alone writes files."""
        state = self.spread.resume_state(self.optimizer, self.run_dir, self.step)
        weights = self.spread.model_state()
        path = self.run_dir / ckpt.CHECKPOINT
        if self.procs.main:
            counts = {"skipped": self.guard.skipped, "rollbacks": self.guard.rollbacks}
            state |= {"scaler": self.scaler.state_dict(), **counts}
            ckpt.save_checkpoint(self.run_dir, self.recipe, self.step, self.history, **state)
            save_model(self.model, self.run_dir / "model", state=weights)
            remove_old_shards(self.run_dir, keep=state.get("shards"))
        self.saved_step = self.step
        return path
