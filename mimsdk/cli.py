"""The ``mimsdk`` command: pre-train, resume, look at reconstructions, embed, probe, list recipes, share."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import warnings
from pathlib import Path

import torch

from mimsdk.atomic import WriteError
from mimsdk.config import list_recipes, recipe_source
from mimsdk.errors import DivergedError
from mimsdk.hub.errors import HubError
from mimsdk.version import __version__


def cmd_pretrain(args: argparse.Namespace) -> None:
    from mimsdk.pretraining import measure_data, pretrain

    if args.data_only:
        print(measure_data(args.recipe, data=args.data, batches=args.data_only, overrides=args.overrides))
        return
    result = pretrain(
        args.recipe,
        data=args.data,
        out=args.out,
        overrides=args.overrides,
        init=args.init,
        init_revision=args.init_revision,
    )
    last = result.history[-1] if result.history else {}
    print(f"finished {len(result.history)} steps; last loss {last.get('loss', float('nan')):.4f}")
    print(f"run directory: {result.run_dir}")


def cmd_shard(args: argparse.Namespace) -> None:
    from mimsdk.sharding import shard

    out = shard(
        args.recipe, data=args.data, out=args.out, workers=args.workers, compression=args.compression,
        overrides=args.overrides,
    )  # fmt: skip
    print(f"wrote the shard set {out}: train on it with mimsdk pretrain {args.recipe} --data {out}")


def cmd_resume(args: argparse.Namespace) -> None:
    from mimsdk.pretraining import pretrain

    result = pretrain(out=args.run_dir, resume=True, overrides=args.overrides)
    print(f"resumed run finished at step {result.history[-1]['step'] if result.history else 0}: {result.run_dir}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from mimsdk.adapter import get_adapter
    from mimsdk.hub import load_model
    from mimsdk.probe import read_dataset

    model = load_model(args.model_dir)
    dataset = read_dataset(model, args.input)
    x = torch.stack([dataset[i][0] for i in range(min(args.count, len(dataset)))])
    gen = torch.Generator().manual_seed(args.seed)
    picture = get_adapter(model.config.modality).picture(model.reconstruct(x, generator=gen), model.config)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.output)
    print(f"wrote {args.output} ({x.shape[0]} samples, mask ratio {model.masker.ratio})")


def cmd_embed(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    from mimsdk.evaluate import extract_features
    from mimsdk.hub import load_model
    from mimsdk.probe import read_dataset

    model = load_model(args.model_dir)
    dataset = read_dataset(model, args.data, args.labels, label_column=args.label_column)
    feats, labels = extract_features(model, dataset, args.batch_size, pool=args.pool)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, feats.numpy())
    elif out.suffix == ".safetensors":
        files = [str(f) for f in getattr(dataset, "files", [])]
        meta = {"files": json.dumps(files), "classes": json.dumps(dataset.classes), "pool": args.pool}
        save_file({"features": feats.contiguous(), "labels": labels.contiguous()}, str(out), metadata=meta)
    else:
        raise SystemExit(f"output {out} must end in .npy or .safetensors")
    print(f"wrote {out}: {tuple(feats.shape)} features")


def cmd_probe(args: argparse.Namespace) -> None:
    from mimsdk.hub import load_model
    from mimsdk.probe import METHODS, SingleSampleWarning, probe_model, random_like

    methods = list(METHODS) if args.method == "all" else [args.method]
    model = load_model(args.model_dir)
    rows = {"pre-trained": model}
    if args.compare_random:
        rows["random init"] = random_like(model, args.seed)
    for i, (name, m) in enumerate(rows.items()):
        with warnings.catch_warnings():
            if i:  # the same data as the first row's: its classes were already warned about
                warnings.simplefilter("ignore", SingleSampleWarning)

            def say(text: str, name: str = name) -> None:  # minutes of work: say what is under way
                print(f"probing the {name} encoder: {text}", file=sys.stderr, flush=True)

            acc = probe_model(
                m, args.data, args.eval_data, args.labels, methods, args.epochs, args.seed, args.label_column, say
            )
        if not i:  # after the first probe, so that an error in the data comes alone
            print(f"| encoder | {' | '.join(methods)} |\n|---|{'---|' * len(methods)}")
        print(f"| {name} | {' | '.join(f'{acc[k]:.3f}' for k in methods)} |")


def cmd_push(args: argparse.Namespace) -> None:
    from mimsdk.hub.pretrained import push_directory

    url = push_directory(
        args.model_dir,
        args.repo_id,
        private=True if args.private else None,
        revision=args.revision,
        encoder_only=args.encoder_only,
        license=args.license,
        datasets=args.dataset,
        commit_message=args.message,
    )
    print(f"pushed {'the encoder of ' if args.encoder_only else ''}{args.model_dir} to {args.repo_id}: {url}")


def cmd_pull(args: argparse.Namespace) -> None:
    from mimsdk.hub.pretrained import pull

    out = pull(args.repo_id, args.directory, revision=args.revision)
    print(f"pulled {args.repo_id}{f' at {args.revision}' if args.revision else ''} into {out}")


# mimsdk export FORMAT: the module and function that write it, and how the written folder loads
EXPORTS = {
    "monai": ("mimsdk.hub.monai_export", "export_monai", "monai.networks.nets.ViT or UNETR(...).vit, strict keys: "
              "mimsdk.hub.monai_export.monai_vit('{out}') or .unetr('{out}', out_channels=N)"),
    "timm": ("mimsdk.hub.timm_export", "export_timm", "timm.create_model('local-dir:{out}', pretrained=True)"),
    "transformers": ("mimsdk.hub.transformers_export", "export_transformers",
                     "ViTMAEForPreTraining.from_pretrained('{out}')"),
    "videomae": ("mimsdk.hub.videomae_export", "export_videomae",
                 "VideoMAEForPreTraining.from_pretrained('{out}') or VideoMAEModel.from_pretrained('{out}')"),
}  # fmt: skip


def cmd_export(args: argparse.Namespace) -> None:
    from mimsdk.hub import load_model

    module, function, hint = EXPORTS[args.format]
    export = getattr(importlib.import_module(module), function)
    options = {"encoder_only": True} if args.encoder_only else {}
    out = export(load_model(args.model_dir), args.out_dir, **options)
    print(f"wrote {out} (how to load it: {out / 'README.md'}): {hint.format(out=out)}")


def cmd_recipes(args: argparse.Namespace) -> None:
    if args.name:
        _, path = recipe_source(args.name)
        print(Path(path).read_text())
        return
    for name, description in list_recipes().items():
        print(f"{name:24s} {description}")


# What a user's input or machine can cause: printed as one line, never as a traceback.
# (ConfigError and DataError are ValueErrors.)
USER_ERRORS = (ValueError, DivergedError, HubError, WriteError, FileNotFoundError, FileExistsError)
MODEL_HELP = "a run directory, a model directory or a Hub repo id (user/name)"


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    """``--labels CSV`` and ``--label-column NAME``, for the commands that read labels."""
    p.add_argument("--labels", metavar="CSV", help="CSV with columns path (relative to it) and label")
    p.add_argument(
        "--label-column",
        metavar="NAME",
        help="the column of --labels holding the labels (default label; another only for documents models)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimsdk", description="Masked-autoencoder pre-training for your domain.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"mimsdk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pre-train a model from a recipe")
    p.add_argument("recipe", help="recipe name (see `mimsdk recipes`) or path to a YAML file")
    p.add_argument("--data", help="training data (default: the recipe's data.path, else the shipped sample)")
    p.add_argument("--out", help="run directory (default: runs/<recipe>-<time>)")
    p.add_argument(
        "--init",
        metavar="REPO_OR_DIR",
        help="continue pre-training from a model (run directory, model directory or Hub repo id): its config replaces "
        "the recipe's model section, its weights the random ones. Public MAE weights (transformers' ViTMAE or "
        "VideoMAE, a timm ViT; a directory or Hub id) keep the recipe's model section, which must have their "
        "architecture, and adapt to its channels and input size",
    )
    p.add_argument("--init-revision", help="Hub revision of --init (branch, tag or commit)")
    p.add_argument(
        "--data-only",
        nargs="?",
        const=50,
        type=int,
        metavar="BATCHES",
        help="run only the data loader for BATCHES batches (default 50) and print samples/s per worker",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.max_steps=50")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("shard", help="prepare a folder once into a shard set that training reads like a folder")
    p.add_argument("recipe", help="the recipe whose preparation to store (its data and model sections)")
    p.add_argument("--data", help="the folder to shard (default: the recipe's data.path, else the shipped sample)")
    p.add_argument("--out", required=True, help="the shard set's folder (new)")
    p.add_argument("--workers", type=int, help="preparing processes (default: data.num_workers)")
    p.add_argument("--compression", choices=["zstd"], help="compress the shards (decoded frames and volumes)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. data.batch_size=8")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("resume", help="continue a run from its last checkpoint, exactly (or extend it)")
    p.add_argument("run_dir")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="train.max_steps=N extends the run; log intervals may change"
    )
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("reconstruct", help="write original | masked | reconstruction pictures")
    p.add_argument("model_dir", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("input", help="a file or folder in the model's modality")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--count", type=int, default=8, help="samples to show (default 8)")
    p.add_argument("--seed", type=int, default=0, help="mask seed")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("embed", help="pooled encoder features of a data set")
    p.add_argument("model_dir", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--data", required=True)
    p.add_argument("-o", "--output", required=True, help=".npy (features) or .safetensors (features, labels, files)")
    add_label_arguments(p)
    p.add_argument("--pool", choices=["mean", "cls"], default="mean")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("probe", help="accuracy of the encoder on labelled data")
    p.add_argument("model_dir", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="labelled training data (class sub-folders or --labels)")
    p.add_argument("--eval-data", help="labelled test data (default: 20%% of --data held out)")
    add_label_arguments(p)
    p.add_argument("--method", choices=["knn", "linear", "finetune", "all"], default="knn")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default 10)")
    p.add_argument("--compare-random", action="store_true", help="also probe a randomly initialised encoder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("push", help="publish a run or model directory to the Hugging Face Hub")
    p.add_argument("model_dir", metavar="RUN_OR_MODEL_DIR")
    p.add_argument("repo_id", metavar="REPO_ID", help="user/name or organisation/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--encoder-only", action="store_true", help="publish the encoder alone (no decoder)")
    p.add_argument("--revision", help="branch to push to (created from main if missing)")
    p.add_argument("--license", help="license in the model card (default apache-2.0)")
    p.add_argument("--dataset", action="append", help="Hub id of a training data set, for the card (repeatable)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="download a model from the Hugging Face Hub into a new directory")
    p.add_argument("repo_id", metavar="REPO_ID")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("export", help="write the encoder for MONAI, timm, transformers' ViTMAE or VideoMAE")
    p.add_argument("format", choices=list(EXPORTS))
    p.add_argument("model_dir", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("out_dir", metavar="OUT_DIR", help="new folder to write")
    p.add_argument(
        "--encoder-only", action="store_true", help="videomae: VideoMAEModel alone, when the decoder has no twin there"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recipes", help="list recipes, or show one")
    p.add_argument("verb", nargs="?", choices=["show"], help="show NAME prints the recipe")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options (pretrain R --out D train.max_steps=5)
    args, extra = parser.parse_known_args(argv)
    overrides = all("=" in e and not e.startswith("-") for e in extra)
    if extra and args.command in ("pretrain", "resume", "shard") and overrides:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
    if getattr(args, "verb", None) == "show" and not args.name:
        print("mimsdk recipes show NAME: name a recipe", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except USER_ERRORS as err:
        print(f"mimsdk: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
