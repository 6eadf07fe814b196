"""Train an emotion model on FER-2013 with a checkpoint every epoch; `--resume` continues a run.

    python -m training.train --data ../shared/data/fer2013.tar.gz --run-dir runs/edge
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from training import data

log = logging.getLogger("training.train")
DEFAULT_DATA = Path(os.environ.get("EDGE_FER_DATA", "../shared/data/fer2013.tar.gz"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from training.models import ARCHS

    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="fer2013.tar.gz, fer2013.csv or a Kaggle image folder")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints and logs of this run")
    p.add_argument("--arch", choices=ARCHS, default="edge")
    p.add_argument("--weights", type=_weights_arg, default=None,
                   help="for vgg16/resnet50: none (from scratch, the default), imagenet (needs internet), or a file of "
                        "the network's weights without its top (keras' *_notop.h5, or a .weights.h5) to fine-tune from")
    p.add_argument("--input-size", type=int, default=None, metavar="PIXELS",
                   help="for vgg16/resnet50: the side the network sees (faces are resized to it; default 48)")
    p.add_argument("--epochs", type=_positive_int, default=80)
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--class-weight-power", type=float, default=0.3,
                   help="weight classes by (1/frequency)^p; 0 turns it off (disgust is 1.5%% of the data)")
    p.add_argument("--ferplus", type=Path, default=None,
                   help="fer2013new.csv: mix FER+ vote distributions into the targets")
    p.add_argument("--ferplus-weight", type=float, default=0.5,
                   help="with --ferplus: target = (1 - w) * FER-2013 label + w * FER+ votes")
    p.add_argument("--teacher", type=Path, default=None,
                   help="an .npz of a teacher's scores (python -m training.teacher): distil them into the targets")
    p.add_argument("--teacher-weight", type=float, default=0.5,
                   help="with --teacher: target = (1 - w) * the label target + w * the teacher's scores")
    p.add_argument("--augment", choices=("basic", "runtime"), default="basic",
                   help="basic: flip, affine, brightness/contrast, erasing; runtime: also small, blurred, noisy, "
                        "dark, flat, JPEG and turned faces as cameras deliver them")
    p.add_argument("--mixup", type=_non_negative, default=0.0, metavar="ALPHA",
                   help="mix each training face with another of its batch, share ~ Beta(ALPHA, ALPHA); 0 turns it off")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=0,
                   help="use only the first N training and validation images (smoke runs)")
    p.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"), default="auto")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/last.keras")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="stop cleanly after the first epoch that ends past this many minutes (resume later)")
    return p.parse_args(argv)


def cpu_has_bf16() -> bool:
    """True where the CPU does bfloat16 math natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def class_weights(targets: np.ndarray, power: float) -> np.ndarray:
    """Per-sample weights from per-class (1/prior)^power, normalised to mean 1 over the samples.

    The prior is that of the targets themselves, so FER+ votes (which move mass to neutral) are balanced for
    what they bring; with one-hot targets it is the class frequency and each sample gets its class's weight.
    """
    prior = targets.mean(axis=0).astype(np.float64)
    w = (1.0 / np.maximum(prior, 1e-6)) ** power
    per_sample = targets @ w
    return (per_sample / per_sample.mean()).astype(np.float32)


def soft_targets(train: data.Split, args: argparse.Namespace) -> tuple[data.Split, np.ndarray]:
    """The training faces and their targets: one-hot FER-2013 labels, or with --ferplus mixed with FER+ vote
    distributions, leaving out the faces FER+ dropped or gave no vote among the seven; with --teacher, mixed
    again with the teacher's scores."""
    train, targets = _label_targets(train, args)
    if args.teacher is None:
        return train, targets
    from training.teacher import stored_scores

    teacher = stored_scores(args.teacher, "Training", train.rows)
    return train, ((1 - args.teacher_weight) * targets + args.teacher_weight * teacher).astype(np.float32)


def _label_targets(train: data.Split, args: argparse.Namespace) -> tuple[data.Split, np.ndarray]:
    """The targets from the labels: FER-2013's, mixed with FER+ votes where --ferplus is given."""
    onehot = np.eye(len(data.LABELS), dtype=np.float32)[train.y]
    if args.ferplus is None:
        return train, onehot
    all_votes = data.read_ferplus(args.ferplus)
    if train.rows.min() < 0 or train.rows.max() >= len(all_votes):
        raise ValueError(f"{args.ferplus}: its rows do not line up with the data (FER+ needs the fer2013.csv form)")
    votes = all_votes[train.rows]
    keep = ~np.isnan(votes).any(axis=1)
    mixed = (1 - args.ferplus_weight) * onehot + args.ferplus_weight * votes
    log.info("--ferplus: %d of %d training faces kept (FER+ dropped or gave no vote to the rest)",
             int(keep.sum()), len(keep))
    return data.Split(train.x[keep], train.y[keep], train.rows[keep]), mixed[keep].astype(np.float32)


def make_datasets(splits: dict[str, data.Split], args: argparse.Namespace):
    import tensorflow as tf

    from training.augment import PRESETS, augment_batch, mixup

    train, val = splits["Training"], splits["PublicTest"]
    if args.limit:
        train, val = train.take(args.limit), val.take(args.limit)
    n_cls = len(data.LABELS)
    train, targets = soft_targets(train, args)
    sample_weights = class_weights(targets, args.class_weight_power)
    augment = PRESETS[args.augment]

    def to_train(x, t, w):
        x = augment_batch(tf.cast(x[..., None], tf.float32), augment)
        return mixup(x, t, w, args.mixup) if args.mixup > 0 else (x, t, w)

    ds_train = (tf.data.Dataset.from_tensor_slices((train.x, targets, sample_weights))
                .shuffle(len(train), seed=args.seed, reshuffle_each_iteration=True)
                .batch(args.batch_size, drop_remainder=True)
                .map(to_train, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
    ds_val = (tf.data.Dataset.from_tensor_slices((val.x[..., None].astype(np.float32), tf.one_hot(val.y, n_cls)))
              .batch(256).prefetch(tf.data.AUTOTUNE))
    return ds_train, ds_val, len(train) // args.batch_size


def compile_model(model, args: argparse.Namespace, steps_per_epoch: int) -> None:
    import keras

    total = max(1, args.epochs * steps_per_epoch)
    warmup = max(1, int(0.1 * total))
    # One-cycle: warm up from lr/25 to lr over 10% of the steps, then cosine down to ~0.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr / 25, decay_steps=total - warmup, alpha=1e-3,
        warmup_target=args.lr, warmup_steps=warmup)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=args.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
        weighted_metrics=[])


def make_callbacks(run_dir: Path, args: argparse.Namespace, state: dict):
    import keras

    started = time.monotonic()

    class Checkpoint(keras.callbacks.Callback):
        """Save last.keras (model and optimizer) every epoch, best.keras on a new best val_acc, and state.json."""

        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.monotonic()
            self.start_epoch = state["epoch"]

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            tmp = run_dir / "last.tmp.keras"
            self.model.save(tmp)
            tmp.replace(run_dir / "last.keras")
            if logs.get("val_acc", 0.0) > state["best_val_acc"]:
                state["best_val_acc"], state["best_epoch"] = logs["val_acc"], epoch + 1
                self.model.save(run_dir / "best.keras")
            state["epoch"] = epoch + 1
            state["history"].append({"epoch": epoch + 1, **logs})
            state["wall_seconds"] += time.monotonic() - self.t0
            self.t0 = time.monotonic()
            done = state["epoch"] - self.start_epoch
            left = (args.epochs - state["epoch"]) * state["wall_seconds"] / max(1, state["epoch"])
            (run_dir / "state.json").write_text(json.dumps(state, indent=1))
            if args.time_budget is not None and time.monotonic() - started > args.time_budget * 60:
                print(f"time budget of {args.time_budget} min used: stopping; continue with --resume", flush=True)
                self.model.stop_training = True
            print(f"epoch {state['epoch']}/{args.epochs} loss {logs.get('loss', 0):.4f} acc {logs.get('acc', 0):.4f} "
                  f"val_acc {logs.get('val_acc', 0):.4f} (best {state['best_val_acc']:.4f} @ {state['best_epoch']}) "
                  f"wall {state['wall_seconds'] / 60:.1f} min, about {left / 60:.0f} min left [{done} this session]",
                  flush=True)

    return [Checkpoint(), keras.callbacks.TerminateOnNaN()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import keras

    problem = weights_problem(args) or (f"--teacher {args.teacher}: no such file"
                                        if args.teacher is not None and not args.teacher.is_file() else None)
    if problem:
        print(problem, file=sys.stderr)
        return 2

    precision = args.precision
    if precision == "auto":
        precision = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(args.seed)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    state_path = args.run_dir / "state.json"

    splits = data.load(args.data)
    print(data.counts_table(splits), flush=True)
    ds_train, ds_val, steps = make_datasets(splits, args)

    if args.resume and (args.run_dir / "last.keras").exists():
        state = json.loads(state_path.read_text())
        if state["args"]["epochs"] != args.epochs or state["args"]["arch"] != args.arch:
            print(f"--resume: the run in {args.run_dir} was started with other --epochs/--arch", file=sys.stderr)
            return 2
        model = keras.models.load_model(args.run_dir / "last.keras")
        print(f"resuming {args.run_dir} at epoch {state['epoch']}/{args.epochs}", flush=True)
    else:
        try:
            model = _new_model(args, steps)
        except WeightsError as e:
            print(e, file=sys.stderr)
            return 2
        state = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                 "command": "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv),
                 "precision": precision, "epoch": 0, "best_val_acc": 0.0, "best_epoch": 0,
                 "wall_seconds": 0.0, "history": [], "finished": False}
    print(f"arch {args.arch}, {model.count_params():,} parameters, precision {precision}, seed {args.seed}, "
          f"{steps} steps per epoch", flush=True)
    if state["epoch"] < args.epochs:
        model.fit(ds_train, validation_data=ds_val, epochs=args.epochs, initial_epoch=state["epoch"],
                  callbacks=make_callbacks(args.run_dir, args, state), verbose=1 if sys.stdout.isatty() else 0)
    state["finished"] = state["epoch"] >= args.epochs
    state_path.write_text(json.dumps(state, indent=1))
    print(f"finished: {state['finished']}, best val_acc {state['best_val_acc']:.4f} at epoch {state['best_epoch']}")
    return 0 if state["finished"] else 1


class WeightsError(Exception):
    """--weights names something that cannot be loaded into the network; the message is one line."""


def _new_model(args: argparse.Namespace, steps: int):
    """The network named by the arguments, with its --weights loaded, compiled for `steps` per epoch."""
    from training.models import build

    try:
        # Keras warns once per layer it cannot fill before it raises; the one-line error says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(args.arch, args.weights, args.input_size)
    except Exception as e:
        if args.weights == "imagenet":  # keras.utils.get_file raises a bare Exception when the download fails
            raise WeightsError(f"--weights imagenet: the ImageNet weights could not be fetched ({_first_line(e)}); "
                               f"copy {args.arch}'s *_notop.h5 from a machine online and give its path") from None
        if args.weights is not None and isinstance(e, (ValueError, OSError)):
            raise WeightsError(f"--weights {args.weights}: not weights of {args.arch} without its top "
                               f"({_first_line(e)})") from None
        raise
    compile_model(model, args, steps)
    return model


def weights_problem(args: argparse.Namespace) -> str | None:
    """Why --weights/--input-size cannot be used as given, or None; what needs the file itself is left to loading."""
    if args.arch not in ("vgg16", "resnet50"):
        if args.weights is not None:
            return f"--weights is for vgg16 and resnet50; {args.arch} trains from scratch"
        if args.input_size not in (None, 48):
            return f"--input-size is for vgg16 and resnet50; {args.arch} takes 48x48 faces"
        return None
    if args.input_size is not None and not 32 <= args.input_size <= 224:
        return f"--input-size {args.input_size}: use 32 to 224 pixels"
    if args.weights not in (None, "imagenet") and not Path(args.weights).is_file():
        return (f"--weights {args.weights}: no such file "
                f"(give imagenet, none, or a file of {args.arch}'s weights without its top)")
    return None


def _weights_arg(text: str) -> str | None:
    """argparse type of --weights: "none" is no weights."""
    return None if text == "none" else text


def _positive_int(text: str) -> int:
    """argparse type: a whole number at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give 1 or more")
    return value


def _non_negative(text: str) -> float:
    """argparse type: a number at least 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: give 0 (off) or a positive number")
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
