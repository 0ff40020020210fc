"""Temporal Fusion Transformer (pytorch-forecasting, trained with lightning.pytorch) as a Classifier.

Choices, and why:
- Classification, not a return forecast: the target is the same binary direction label the other
  models predict (CrossEntropy over classes down/up), so P(up) is the softmax of the "up" logit,
  directly comparable with LightGBM and the baselines; a quantile forecast of fwd_return would need
  an interpolated CDF at 0 to become a probability and is dominated by noise at the 1-minute scale.
- One decoder step per sample: the row to classify is the decoder step at bar t; the encoder is
  the ENCODER_LENGTH bars before it. Features are "known" reals (they are known at the close of
  bar t, which is when the prediction is made); the label is NOT a model input, because the labels
  of the last H bars before t are not yet known at t.
- Gaps: a row is usable when all its features are finite. Maximal runs of consecutive minutes of
  usable rows form separate series (groups); a sample never spans a gap, so a row needs
  ENCODER_LENGTH usable minutes right before it or it gets NaN. Rows without a known label (end of
  a day, before a gap) still serve as encoder context; they are never training targets. Callers
  may pass full feature frames or core.features.training_rows output.
- Honest early stopping: the last VALIDATION_FRACTION of the labelled period validates; training
  targets end at least H + MAX_LOOKBACK minutes before it (core.splits.purge_gap). Feature scalers
  are fitted on the training part only. The weights of the best validation epoch are kept.
- Cost: a tiny network (hidden 16) and at most TftConfig.batches_per_epoch random batches per epoch
  (a fresh random subsample of the training windows each epoch) keep an epoch to seconds on 2 CPU
  cores; the wall-clock budget (`max_minutes`, LEVIBOT_TFT_MAX_MINUTES) covers preparation plus Lightning's
  Timer, which stops training after the step that crosses it.
torch and pytorch_forecasting are imported inside functions only: importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from levibot_assets.core.atomic import atomic_write_bytes, atomic_write_text
from levibot_assets.core.features import FEATURE_COLUMNS, LABEL_AVAILABLE_COLUMN, LABEL_COLUMN
from levibot_assets.core.model_api import MODEL_FAMILIES, Fitted, TrainingConfig
from levibot_assets.core.ohlcv import MINUTE, utc_timestamps
from levibot_assets.core.splits import purge_gap

CHECKPOINT_FILE = MODEL_FAMILIES["tft"].main_file
INFO_FILE = "tft.json"
ENCODER_LENGTH = 30  # bars of context before each scored row (callers pass this much history)
VALIDATION_FRACTION = 0.15
MIN_TRAIN_SAMPLES = 200
MIN_VALIDATION_SAMPLES = 50
_TIME, _GROUP, _TARGET = "minute_idx", "segment", "direction"
_CLASSES = ["down", "up"]
_UNIX_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")

Progress = Callable[[str], None]


_INTEROP_THREADS_SET = False


def _limit_threads(torch: Any, threads: int) -> None:
    """Hold this process to `threads` CPU threads (LEVIBOT_THREADS, the run's share of the cores):
    torch's intra-op pool, its inter-op pool (settable once per process, before inter-op work
    starts), and the BLAS/OpenMP pools via threadpoolctl when installed. Left in place after
    training: the process belongs to the run."""
    global _INTEROP_THREADS_SET
    torch.set_num_threads(threads)
    if not _INTEROP_THREADS_SET:
        _INTEROP_THREADS_SET = True
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set, or inter-op work already ran in this process
            pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)


class TftTrainingError(ValueError):
    """The rows cannot train a TFT (message says why)."""


@dataclass(frozen=True)
class TftConfig:
    """Network size and training schedule; the defaults fit ~14 days x 1440 rows in minutes on 2 cores."""

    max_epochs: int = 30
    patience: int = 4  # epochs without a better validation loss before early stopping
    batch_size: int = 256
    batches_per_epoch: int = 20  # random training windows per epoch: batch_size x batches_per_epoch
    validation_stride: int = 3  # validate on every n-th minute of the validation slice
    hidden_size: int = 16
    attention_head_size: int = 2
    hidden_continuous_size: int = 8
    dropout: float = 0.1
    learning_rate: float = 3e-3

    def network_kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "attention_head_size": self.attention_head_size,
            "hidden_continuous_size": self.hidden_continuous_size,
            "dropout": self.dropout,
            "learning_rate": self.learning_rate,
            "optimizer": "adam",
        }


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in ["timestamp", *FEATURE_COLUMNS] if c not in frame.columns]
    if missing:
        raise TftTrainingError(f"the frame lacks feature-contract columns: {missing}")
    if frame["timestamp"].duplicated().any():
        raise TftTrainingError("duplicate timestamps: pass one symbol's rows, one row per minute")


def _series_frame(frame: pd.DataFrame, labelled: bool) -> pd.DataFrame:
    """Usable rows with a minute index, a segment id per gap-free run, and the class target.

    `row` keeps the position in `frame` so predictions map back. Without `labelled`, the target is
    a placeholder (it is not a model input, only required by the dataset class).
    """
    _check_frame(frame)
    minute = ((utc_timestamps(frame["timestamp"]) - _UNIX_EPOCH) // MINUTE).to_numpy(dtype="int64")
    order = np.argsort(minute, kind="stable")
    features = frame[FEATURE_COLUMNS].to_numpy(dtype="float32")[order]
    usable = np.isfinite(features).all(axis=1)
    out = pd.DataFrame(features[usable], columns=FEATURE_COLUMNS)
    out[_TIME] = minute[order][usable]
    out["row"] = order[usable]
    breaks = np.diff(out[_TIME].to_numpy(), prepend=np.iinfo("int64").min) != 1
    out[_GROUP] = pd.Categorical(np.cumsum(breaks).astype(str))
    if labelled:
        label = frame[LABEL_COLUMN].to_numpy(dtype="float64")[order][usable]
        known = frame[LABEL_AVAILABLE_COLUMN].to_numpy(dtype=bool)[order][usable] & np.isfinite(label)
        out["known"] = known
        target = np.where(label == 1.0, "up", "down")
    else:
        target = np.full(len(out), "down")
    out[_TARGET] = pd.Categorical(target, categories=_CLASSES)
    return out


def _check_labels(frame: pd.DataFrame) -> None:
    for column in (LABEL_COLUMN, LABEL_AVAILABLE_COLUMN):
        if column not in frame.columns:
            raise TftTrainingError(f"the training frame lacks the {column!r} column")
    known = frame[LABEL_AVAILABLE_COLUMN].astype(bool).to_numpy()
    labels = frame[LABEL_COLUMN].to_numpy(dtype="float64")[known]
    if np.isnan(labels).any():
        raise TftTrainingError(f"{int(np.isnan(labels).sum())} rows marked label_available have a NaN label")
    if not np.isin(labels, [0.0, 1.0]).all():
        raise TftTrainingError("labels must be 0 or 1")


def _datasets(series: pd.DataFrame, horizon: int, validation_stride: int):
    """Training and validation TimeSeriesDataSets split by time with a purge gap."""
    from pytorch_forecasting import TimeSeriesDataSet
    from pytorch_forecasting.data import NaNLabelEncoder

    labelled_minutes = series.loc[series["known"], _TIME].to_numpy()
    if labelled_minutes.size == 0:
        raise TftTrainingError("no row has a known label: nothing to train on")
    first, last = labelled_minutes.min(), labelled_minutes.max()
    valid_start = int(last - VALIDATION_FRACTION * (last - first))
    train_end = valid_start - int(purge_gap(horizon) / MINUTE)  # training targets end before this minute

    # Rows up to the last training target: its scalers never see the validation period.
    train_part = series.loc[series[_TIME] < train_end]
    target_minutes = series.loc[series["known"], _TIME].to_numpy()

    def target_filter(start: int, end: float, stride: int = 1):
        def keep(index: pd.DataFrame) -> np.ndarray:
            t = index["time_idx_first_prediction"].to_numpy()
            return (t >= start) & (t < end) & np.isin(t, target_minutes) & (t % stride == 0)

        return keep

    def sample_count(frame: pd.DataFrame, start: int, end: float) -> int:
        return int((frame["known"] & (frame[_TIME] >= start) & (frame[_TIME] < end)).sum())

    if sample_count(train_part, first, train_end) < MIN_TRAIN_SAMPLES:
        raise TftTrainingError(
            f"too few labelled rows before the validation slice: the TFT needs at least {MIN_TRAIN_SAMPLES} "
            f"(the last {VALIDATION_FRACTION:.0%} of the period validates, after a {purge_gap(horizon)} purge gap)"
        )
    try:
        train = TimeSeriesDataSet(
            train_part,
            time_idx=_TIME,
            target=_TARGET,
            group_ids=[_GROUP],
            max_encoder_length=ENCODER_LENGTH,
            min_encoder_length=ENCODER_LENGTH,
            max_prediction_length=1,
            time_varying_known_reals=list(FEATURE_COLUMNS),
            target_normalizer=NaNLabelEncoder(),
            add_relative_time_idx=True,
        ).filter(target_filter(first, train_end))
        valid = TimeSeriesDataSet.from_dataset(train, series, stop_randomization=True).filter(
            target_filter(valid_start, np.inf, validation_stride)
        )
    except (AssertionError, ValueError) as exc:
        raise TftTrainingError(
            f"too few gap-free runs of {ENCODER_LENGTH + 1} minutes with labels to build TFT samples ({exc})"
        ) from None
    for name, dataset, minimum in (("training", train, MIN_TRAIN_SAMPLES), ("validation", valid, MIN_VALIDATION_SAMPLES)):
        if len(dataset) < minimum:
            raise TftTrainingError(
                f"too few {name} samples: {len(dataset)} < {minimum} (each needs {ENCODER_LENGTH} "
                "gap-free minutes of context and a known label)"
            )
        targets = dataset.data["target"][0].numpy()
        classes = np.unique(targets[dataset.index["index_end"].to_numpy()])
        if len(classes) < 2:
            raise TftTrainingError(f"the {name} samples hold a single class: a classifier cannot be trained")
    return train, valid


@dataclass
class TrainingReport:
    """What happened in training (stored in tft.json and in the model metrics)."""

    epochs: int = 0
    stop_reason: str = ""
    best_val_loss: float | None = None
    train_samples: int = 0
    validation_samples: int = 0
    train_seconds: float = 0.0
    device: str = "cpu"
    history: list[dict[str, float | None]] = field(default_factory=list)  # one row per epoch


def _callbacks(progress: Progress | None, started: float, report: TrainingReport):
    """Per-epoch progress lines and an in-memory copy of the best validation weights."""
    import lightning.pytorch as pl

    class EpochLog(pl.Callback):
        def __init__(self):
            self.best_state: dict | None = None

        def on_validation_end(self, trainer, module):
            if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
                return
            val = float(trainer.callback_metrics["val_loss"])
            if report.best_val_loss is None or val < report.best_val_loss:
                report.best_val_loss = val
                self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}

        def on_train_epoch_end(self, trainer, module):
            metrics = trainer.callback_metrics

            def loss(name: str) -> float | None:
                return round(float(metrics[name]), 6) if name in metrics else None

            row = {
                "epoch": trainer.current_epoch + 1,
                "train_loss": loss("train_loss_epoch"),
                "val_loss": loss("val_loss"),
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            report.history.append(row)
            if progress is not None:
                progress(
                    f"TFT epoch {row['epoch']}: train loss {row['train_loss']}, "
                    f"val loss {row['val_loss']}, {row['elapsed_s']:.0f}s elapsed"
                )

    return EpochLog()


@contextlib.contextmanager
def _library_warnings_silenced() -> Iterator[None]:
    """The warnings Lightning and pytorch-forecasting raise about their own internals (a deprecated
    pytree call, nn.Module hyperparameters) say nothing a user can act on; ours still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Attribute '.*' is an instance of `nn.Module`")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        yield


def train_tft(
    frame: pd.DataFrame,
    *,
    horizon: int,
    max_minutes: float,
    threads: int,
    progress: Progress | None = None,
    seed: int = 0,
    config: TftConfig = TftConfig(),
) -> "TftClassifier":
    """Train on one symbol's feature rows (several days, `horizon`-bar labels) within `max_minutes`
    of wall clock, on `threads` CPU threads. Raises TftTrainingError on unusable input.
    """
    started = time.monotonic()
    budget_s = 60.0 * max_minutes
    if budget_s <= 0:
        raise TftTrainingError(f"the TFT time budget must be positive, got {budget_s / 60} minutes")
    _check_frame(frame)
    _check_labels(frame)

    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, Timer
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.metrics import CrossEntropy

    _limit_threads(torch, threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    train, valid = _datasets(
        _series_frame(frame, labelled=True), horizon, config.validation_stride
    )
    gpu = torch.cuda.is_available()
    report = TrainingReport(train_samples=len(train), validation_samples=len(valid), device="gpu" if gpu else "cpu")
    # Lightning's device banner and tips (INFO) and pytorch-forecasting's hyperparameter warning
    # about nn.Module attributes would drown the per-epoch lines in the run log.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    with _library_warnings_silenced():
        model = TemporalFusionTransformer.from_dataset(
            train, loss=CrossEntropy(), log_interval=-1, log_val_interval=-1, **config.network_kwargs()
        )
    epoch_log = _callbacks(progress, started, report)
    early_stopping = EarlyStopping(monitor="val_loss", mode="min", patience=config.patience)
    remaining_s = max(budget_s - (time.monotonic() - started), 0.001)
    timer = Timer(duration=dt.timedelta(seconds=remaining_s), interval="step")
    with tempfile.TemporaryDirectory(prefix="levibot-tft-") as tmp:
        trainer = pl.Trainer(
            accelerator="gpu" if gpu else "cpu",
            devices=1,
            max_epochs=config.max_epochs,
            limit_train_batches=config.batches_per_epoch,
            callbacks=[epoch_log, early_stopping, timer],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True if not gpu else "warn",
            default_root_dir=tmp,
        )
        with _library_warnings_silenced():
            trainer.fit(
                model,
                train_dataloaders=train.to_dataloader(train=True, batch_size=config.batch_size, num_workers=0),
                val_dataloaders=valid.to_dataloader(train=False, batch_size=1024, num_workers=0),
            )
        if epoch_log.best_state is not None:
            model.load_state_dict(epoch_log.best_state)
        path = Path(tmp) / CHECKPOINT_FILE
        trainer.save_checkpoint(path, weights_only=True)
        checkpoint = path.read_bytes()
    report.epochs = len(report.history)
    if early_stopping.stopped_epoch > 0:
        report.stop_reason = "early_stopping"
    elif timer.time_remaining() <= 0:
        report.stop_reason = "time_budget"
    else:
        report.stop_reason = "max_epochs"
    report.train_seconds = round(time.monotonic() - started, 2)
    if progress is not None:
        progress(
            f"TFT trained {report.epochs} epoch(s) in {report.train_seconds:.0f}s on {report.device}, "
            f"stopped by {report.stop_reason.replace('_', ' ')}, best val loss {report.best_val_loss}"
        )
    return TftClassifier(model.cpu().eval(), checkpoint, asdict(report))


class TftClassifier:
    """P(up) from a trained TFT; predicts on new rows with the scalers fitted in training."""

    model_type = "tft"
    context_rows = ENCODER_LENGTH

    def __init__(self, network: Any, checkpoint: bytes, training: dict[str, Any]):
        self.network = network
        self._checkpoint = checkpoint
        self.training = training

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(up) per row of `frame`; NaN where the ENCODER_LENGTH previous minutes are not all usable."""
        import torch
        from pytorch_forecasting import TimeSeriesDataSet

        proba = np.full(len(frame), np.nan)
        series = _series_frame(frame, labelled=False)
        counts = series.groupby(_GROUP, observed=True)[_TIME].transform("size").to_numpy()
        series = series.loc[counts > ENCODER_LENGTH]
        if series.empty:
            return proba
        dataset = TimeSeriesDataSet.from_parameters(
            self.network.dataset_parameters, series, stop_randomization=True, min_prediction_idx=None
        )
        up = int(self.network.output_transformer.transform(np.array(["up"]))[0])
        row_of_minute = pd.Series(series["row"].to_numpy(), index=series[_TIME].to_numpy())
        self.network.eval()
        with torch.no_grad():
            for x, _ in dataset.to_dataloader(train=False, batch_size=1024, num_workers=0):
                logits = self.network(x)["prediction"][:, 0, :]
                p_up = torch.softmax(logits.float(), dim=-1)[:, up].numpy()
                minutes = x["decoder_time_idx"][:, 0].numpy()
                proba[row_of_minute.loc[minutes].to_numpy()] = p_up
        return proba

    def save(self, directory: Path) -> list[Path]:
        """tft.ckpt (Lightning checkpoint: a pickle, verify its hash before loading) and tft.json."""
        directory = Path(directory)
        info = {"model_type": self.model_type, "encoder_length": ENCODER_LENGTH, "features": FEATURE_COLUMNS,
                "training": self.training}
        return [
            atomic_write_bytes(directory / CHECKPOINT_FILE, self._checkpoint),
            atomic_write_text(directory / INFO_FILE, json.dumps(info, indent=2, sort_keys=True, default=float)),
        ]

    @classmethod
    def load(cls, directory: Path) -> "TftClassifier":
        from pytorch_forecasting import TemporalFusionTransformer

        directory = Path(directory)
        info = json.loads((directory / INFO_FILE).read_text())
        if info.get("features") != FEATURE_COLUMNS or info.get("encoder_length") != ENCODER_LENGTH:
            raise ValueError(f"{directory / INFO_FILE} was written for other features or encoder length")
        checkpoint = (directory / CHECKPOINT_FILE).read_bytes()
        with _library_warnings_silenced():
            network = TemporalFusionTransformer.load_from_checkpoint(
                io.BytesIO(checkpoint), map_location="cpu", weights_only=False
            )
        return cls(network.eval(), checkpoint, info.get("training", {}))


def fit_family(train: pd.DataFrame, config: TrainingConfig, progress: Progress | None, study_name: str) -> Fitted:
    """The tft family's fit (core.model_api): trained within config.tft_max_minutes of wall clock."""
    model = train_tft(train, horizon=config.horizon, max_minutes=config.tft_max_minutes, threads=config.threads,
                      progress=progress)
    return Fitted(model=model, facts=dict(model.training))
