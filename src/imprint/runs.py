"""Run folders: self-describing, resumable, written atomically.

This module owns every file name of a run folder (see ARCHITECTURE.md)::

    RUN/
      config.toml           the resolved config (every value, defaults included)
      manifest.json         imprint/torch/numpy/python versions, git revision, seeds, start time
      data.json             the data as loaded: input shape (C, H, W), classes, set sizes
      init.safetensors      the state at step 0 (weights, biases, BN parameters and averages)
      rewind.safetensors    the dense state at the rewind step
      summary.csv           one row per completed round
      run.json              written when the run stops: why, and the best round
      config_changes.json   deliberate changes on resume (--allow-change), with the round
      checkpoint.safetensors  the round in progress, every train.checkpoint_every steps
                            (state, momentum, generators, loss sums; round and step in
                            its metadata); removed once the round is complete
      .lock                 held (flock) by the process running in the folder
      rounds/NNN/
        mask.safetensors    bool masks per linear layer ("layers.{l}.weight" / ".bias")
        start.safetensors   the state the round trained from (rewind state x mask)
        final.safetensors   the state at the end of the round (pruned entries exactly 0)
        curves.csv          step, train_loss, train_top1, val_loss, val_top1, val_top5
        metrics.json        the round's summary; written last, it marks the round complete

Every file is written to a temporary name in the same folder, flushed to disk and
renamed over its final name, so a crash never leaves a half-written file under a
name that is read later.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import stat
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from imprint.config import (
    Config,
    ConfigError,
    allowed_change,
    changed_keys,
    config_differences,
    config_to_dict,
    flatten_document,
    parse_config,
)
from imprint.prune import layer_counts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from imprint.machine import environment_record
from imprint.records import (
    RoundMetrics,
    check_data_record,
    check_masks,
    check_round_metrics,
    check_state,
    round_document,
)
from imprint.safeio import (
    RunFolderError,
    check_confined,
    confine,
    first_layer_inputs,
    os_reason,
    parse_tensors,
    read_file,
    read_text_or_missing,
    toml_document,
    write_bytes,
    write_csv,
    write_text,
    writer_gone,
)

__all__ = [
    "RunFolder",
    "RESULT_NEUTRAL_KEYS",
    "GROUP_FILE",
    "is_group",
    "member_dir",
    "group_members",
]


GROUP_FILE = "group.json"  # marks a folder of seeds run together (imp.run_group)

# Config keys that cannot change any result: a resume may change them freely (logged).
RESULT_NEUTRAL_KEYS = ("train.checkpoint_every", "track")
# Sections that --allow-change never opens: a changed model, data or seed is another run.
UNCHANGEABLE_SECTIONS = ("model", "data", "seeds")
# What a start writes before its first round; removed again when the start fails
# before training (RunFolder.discard_start), so the corrected command is not refused.
_START_FILES = (
    "config.toml",
    "manifest.json",
    "data.json",
    "init.safetensors",
    "permutation.safetensors",
    "rewind.safetensors",
    "summary.csv",
    "run.json",
    "config_changes.json",
    GROUP_FILE,
)


class RunFolder:
    """Paths and typed reads/writes of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        confine(self.root)

    # ----------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    @contextlib.contextmanager
    def lock(self):
        """Hold the folder for one process: a second one is refused at once.

        The lock is an flock on RUN/.lock, which the kernel releases when its holder
        dies, so a lock left by a killed process is simply taken over.
        """
        import fcntl

        self._refuse_foreign()
        check_confined(self.lock_path)  # a member folder that is a link: not even locked
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Never through a planted link: O_NOFOLLOW, and the lock file only.
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            handle = os.fdopen(fd, "r+")  # noqa: SIM115 - held for the context
        except OSError as error:
            raise RunFolderError(f"Cannot create {self.lock_path}: {os_reason(error)}.") from error
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunFolderError(
                    f"{self.root} is in use by {holder}. Wait for it to finish, or stop it; "
                    "a lock left by a killed process is taken over automatically."
                ) from None
            handle.seek(0)
            handle.truncate()
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            handle.write(f"process {os.getpid()} on {platform.node()} since {stamp}\n")
            handle.flush()
            self._remove_temporaries()
            yield
        finally:
            handle.close()  # releases the flock

    def discard_start(self) -> bool:
        """Remove what a start wrote, if the folder holds no completed round and no
        checkpoint (and, in a group, no member does): a start that failed before
        training (missing data, an option this device refuses) then leaves nothing that
        would refuse the corrected command. Returns whether it removed anything."""
        members = [path for _, path in group_members(self.root)] if is_group(self.root) else []
        folders = [self, *(RunFolder(path) for path in members)]
        if any(f.completed_rounds() or f.checkpoint_path.exists() for f in folders):
            return False
        removed = False
        for folder in reversed(folders):
            for name in _START_FILES:
                path = folder.root / name
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed = True
            if folder is not self:
                (folder.root / ".lock").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.root.rmdir()  # only when empty
        return removed

    def _remove_temporaries(self) -> None:
        """Half-written files of a killed process: never read, removed under the lock.
        Only this folder's own files (a group's member folders have their own lock), and
        only those whose writer has ended: a report or analysis writing here at the same
        moment keeps its temporaries."""
        for pattern in (".*.tmp", "rounds/*/.*.tmp", "analysis/.*.tmp", "analysis/*/.*.tmp"):
            for path in self.root.glob(pattern):
                try:
                    check_confined(path)  # never through a linked folder
                    regular = stat.S_ISREG(path.lstat().st_mode)
                except (RunFolderError, OSError):
                    continue
                if regular and writer_gone(path):
                    path.unlink(missing_ok=True)

    def _refuse_foreign(self) -> None:
        if self.config_path.exists() or not self.root.exists():
            return
        if not self.root.is_dir():
            raise RunFolderError(f"{self.root} exists and is not a folder.")
        # What a start killed (or failed: a full disk) before config.toml leaves behind is
        # ours, not foreign (config.toml is written last), and is written anew.
        ours = {".lock", *_START_FILES}
        leftovers = [
            p
            for p in self.root.iterdir()
            if p.name not in ours and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        ]
        if leftovers:
            raise RunFolderError(
                f"{self.root} is not empty and has no config.toml: not an imprint run folder. "
                "Choose an empty or new --out folder."
            )
        self.discard_start()  # a failed start's files: this start writes them anew

    @property
    def data_path(self) -> Path:
        return self.root / "data.json"

    @property
    def permutation_path(self) -> Path:
        return self.root / "permutation.safetensors"

    def save_permutation(self, permutation: torch.Tensor) -> None:
        self.save_tensors(self.permutation_path, {"permutation": permutation.cpu()})

    def permutation(self) -> torch.Tensor | None:
        """The pixel permutation the run trained under (network input j = image pixel
        permutation[j]), or None without the control: read from permutation.safetensors,
        checked to be a permutation; derived from the config only for folders written
        before it was stored."""
        config = self.read_config()
        if not getattr(config.data, "permute_pixels", False):
            return None
        if self.permutation_path.exists():
            perm = self.load_tensors(self.permutation_path).get("permutation")
            if (
                perm is None
                or perm.dtype != torch.int64
                or not torch.equal(torch.sort(perm).values, torch.arange(perm.numel()))
            ):
                raise RunFolderError(f"{self.permutation_path}: not a permutation of the inputs.")
            return perm
        from imprint.data import pixel_permutation

        shape = self.read_data_record()["shape"]
        return pixel_permutation(math.prod(int(v) for v in shape), getattr(config.data, "seed", 0))

    @property
    def init_path(self) -> Path:
        return self.root / "init.safetensors"

    @property
    def rewind_path(self) -> Path:
        return self.root / "rewind.safetensors"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.csv"

    @property
    def run_path(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoint.safetensors"

    def save_checkpoint(
        self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
    ) -> None:
        """Replace the checkpoint (atomically: a kill leaves the old one or the new)."""
        data = st_save(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            metadata={"imprint": json.dumps(metadata)},
        )
        write_bytes(self.checkpoint_path, data)

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The checkpoint's tensors and metadata; None when there is none."""
        path = self.checkpoint_path
        if not path.exists():
            return None
        raw = read_file(path)
        tensors = parse_tensors(path, raw)
        try:
            header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
            metadata = json.loads(header["__metadata__"]["imprint"])
            if not isinstance(metadata, dict):
                raise ValueError("the metadata is not a JSON object")
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise RunFolderError(f"{path} has no readable imprint metadata: {error}.") from None
        return tensors, metadata

    def remove_checkpoint(self) -> None:
        try:
            self.checkpoint_path.unlink(missing_ok=True)
        except OSError as error:
            raise RunFolderError(
                f"Cannot remove {self.checkpoint_path}: {os_reason(error)}."
            ) from error

    def round_dir(self, index: int) -> Path:
        return self.root / "rounds" / f"{index:03d}"

    def round_file(self, index: int, name: str) -> Path:
        allowed = ("mask", "start", "final", "curves", "metrics")
        if name not in allowed:
            raise ValueError(f"The 'name' parameter must be one of {allowed}. Got {name!r}.")
        suffix = {"curves": ".csv", "metrics": ".json"}.get(name, ".safetensors")
        return self.round_dir(index) / f"{name}{suffix}"

    # ---------------------------------------------------------------- config
    def prepare(
        self,
        config: Config,
        extra_manifest: Mapping[str, Any] | None = None,
        allow_changes: Sequence[str] = (),
    ) -> bool:
        """Create the folder for ``config``, or check that it already holds ``config``.

        Returns True when the folder already existed (a resume). Refuses a folder made
        with a different config, naming the keys that differ, unless every difference
        is under ``allow_changes`` (dotted keys or sections, e.g. "train.lr"): then the
        stored config is updated and the change logged in config_changes.json, so the
        rest of the run follows the new values (completed rounds stay as they are).
        """
        unsafe = [key for key in allow_changes if key.split(".")[0] in UNCHANGEABLE_SECTIONS]
        if unsafe:
            raise RunFolderError(
                f"--allow-change {unsafe[0]}: the model, the data and the seeds of a run "
                "cannot change on resume (its rounds would mix two experiments). Use a new "
                "--out folder."
            )
        document = config_to_dict(config)
        if self.config_path.exists():
            stored = self.read_config_document()
            try:
                # Options added to imprint after the folder was made take their defaults.
                stored = config_to_dict(parse_config(stored, str(self.config_path)))
            except ConfigError:
                pass  # listed key by key below
            changed = changed_keys(stored, document)
            free = [*allow_changes, *RESULT_NEUTRAL_KEYS]
            refused = [key for key in changed if not allowed_change(key, free)]
            if refused:
                listing = "; ".join(config_differences(stored, document))
                raise RunFolderError(
                    f"{self.root} holds a run with a different config ({self.config_path}): "
                    f"{listing}. Use another --out folder, the folder's own config to resume, "
                    "or --allow-change KEY for a deliberate change (e.g. train.lr)."
                )
            if changed:
                self._log_changes(stored, document, changed)
                write_text(self.config_path, toml_document(document))
            return True
        self._refuse_foreign()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"Cannot create {self.root}: {os_reason(error)}.") from error
        manifest = {
            **environment_record(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seeds": document["seeds"],
            **(extra_manifest or {}),
        }
        write_text(self.manifest_path, json.dumps(manifest, indent=2) + "\n")
        # config.toml last: its presence means the folder is an imprint run.
        write_text(self.config_path, toml_document(document))
        return False

    @property
    def changes_path(self) -> Path:
        return self.root / "config_changes.json"

    def _log_changes(
        self, stored: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str]
    ) -> None:
        a, b = flatten_document(stored), flatten_document(current)
        log: list[Any] = []
        if self.changes_path.exists():
            try:
                log = json.loads(read_text_or_missing(self.changes_path))
            except (OSError, ValueError, RecursionError) as error:
                raise RunFolderError(
                    f"{self.changes_path} is not readable JSON ({error}); move it away to "
                    "start a new log of changes."
                ) from None
            if not isinstance(log, list):
                raise RunFolderError(
                    f"{self.changes_path} must hold a JSON list of changes. "
                    f"Got {type(log).__name__}."
                )
        log.append(
            {
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "from_round": len(self.completed_rounds()),
                "changes": {key: [a.get(key), b.get(key)] for key in keys},
            }
        )
        write_text(self.changes_path, json.dumps(log, indent=2) + "\n")

    def read_config_document(self) -> dict[str, Any]:
        """config.toml as a document, with every table imprint writes (an empty or cut
        file is a damaged one)."""
        try:
            document = tomllib.loads(read_text_or_missing(self.config_path))
        except (OSError, tomllib.TOMLDecodeError, RecursionError) as error:
            raise RunFolderError(f"Cannot read {self.config_path}: {error}.") from error
        missing = [t for t in ("data", "model", "train", "prune", "seeds") if t not in document]
        if missing:
            raise RunFolderError(
                f"{self.config_path} lacks the [{'], ['.join(missing)}] table(s) that imprint "
                "writes: a damaged config file."
            )
        return document

    def write_data_record(self, record: Mapping[str, Any]) -> None:
        write_text(self.data_path, json.dumps(record, indent=2) + "\n")

    def read_data_record(self) -> dict[str, Any]:
        """data.json, checked against the folder: an image shape (C, H, W) whose pixels
        are the first layer's inputs, at least 2 classes, and the pixel permutation
        exactly when the config asks for it."""
        path = self.data_path
        try:
            record = json.loads(read_text_or_missing(path))
        except FileNotFoundError:
            raise RunFolderError(f"{path} is missing (written when a run starts).") from None
        except (OSError, ValueError, RecursionError) as error:
            raise RunFolderError(f"{path} is not readable JSON: {error}.") from None
        inputs = first_layer_inputs(self.round_file(0, "mask"))
        data = self.read_config_document().get("data", {}) if self.config_path.exists() else None
        check_data_record(record, path, inputs, data)
        return record

    def read_config(self) -> Config:
        document = self.read_config_document()
        return parse_config(document, source=str(self.config_path))

    def check_model(self, config: Config) -> None:
        """Refuse a folder whose stored weights (init.safetensors) do not have the layer
        shapes its config and data.json describe: no analysis of mismatched files."""
        record = self.read_data_record()
        try:
            inputs = math.prod(int(v) for v in record["shape"])
            dims = [inputs, *config.model.hidden, int(record["num_classes"])]
        except (KeyError, TypeError, ValueError):
            raise RunFolderError(f"{self.data_path}: no input shape and class count.") from None
        state = self.load_tensors(self.init_path)
        for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            weight = state.get(f"layers.{layer}.weight")
            if weight is None or tuple(weight.shape) != (fan_out, fan_in):
                got = None if weight is None else tuple(weight.shape)
                raise RunFolderError(
                    f"{self.init_path}: layer {layer} is {got}; {self.config_path} and "
                    f"{self.data_path} describe ({fan_out}, {fan_in}): the files disagree."
                )
        if f"layers.{len(dims) - 1}.weight" in state:
            raise RunFolderError(
                f"{self.init_path} has more layers than {self.config_path} describes."
            )

    # --------------------------------------------------------------- tensors
    def save_tensors(self, path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
        data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        write_bytes(path, data)

    def load_tensors(self, path: Path) -> dict[str, torch.Tensor]:
        return parse_tensors(path, read_file(path))

    # ---------------------------------------------------------------- rounds
    def completed_rounds(self) -> list[int]:
        """Rounds 0..k whose metrics.json exists (written last), contiguous from 0. A
        completed round after a missing one is a damaged folder: refused, named."""
        done: list[int] = []
        while self.round_file(len(done), "metrics").exists():
            done.append(len(done))
        later = sorted(
            int(path.parent.name)
            for path in self.root.glob("rounds/[0-9][0-9][0-9]/metrics.json")
            if int(path.parent.name) > len(done)
        )
        if later:
            raise RunFolderError(
                f"{self.root}: round {len(done)} is missing, but round {later[0]} is complete "
                f"({self.round_file(len(done), 'metrics')} absent): a damaged run folder."
            )
        return done

    def save_round(
        self,
        index: int,
        masks: Mapping[str, torch.Tensor],
        start: Mapping[str, torch.Tensor],
        final: Mapping[str, torch.Tensor],
        curves: Sequence[Mapping[str, float]],
        curve_columns: Sequence[str],
        metrics: Mapping[str, Any],
    ) -> None:
        self.save_tensors(self.round_file(index, "mask"), masks)
        self.save_tensors(self.round_file(index, "start"), start)
        self.save_tensors(self.round_file(index, "final"), final)
        write_csv(self.round_file(index, "curves"), curves, curve_columns)
        record = round_document(metrics)  # readings nested; JSON has no NaN: null
        write_text(self.round_file(index, "metrics"), json.dumps(record, indent=2) + "\n")

    def round_metrics(self, index: int) -> RoundMetrics:
        path = self.round_file(index, "metrics")
        try:
            return check_round_metrics(json.loads(read_text_or_missing(path)), index, path)
        except FileNotFoundError:
            raise RunFolderError(f"{path} is missing: round {index} is not complete.") from None
        except (OSError, ValueError, RecursionError) as error:
            raise RunFolderError(f"{path} is not readable JSON: {error}.") from None

    def round_masks(self, index: int) -> dict[str, torch.Tensor]:
        """Round ``index``'s masks, checked: bool tensors, one weight and one bias mask
        per linear layer, shapes that chain (layer l+1's inputs are layer l's units),
        and not all pruned."""
        path = self.round_file(index, "mask")
        masks = self.load_tensors(path)
        n_layers = check_masks(masks, path)
        if self.round_file(index, "metrics").exists():  # a completed round: they must agree
            metrics = self.round_metrics(index)
            alive = [a for a, _ in layer_counts(masks)]
            units = [int(masks[f"layers.{i}.weight"].shape[0]) for i in range(n_layers)]
            if alive != metrics["layer_alive"] or units != metrics["units"]:
                raise RunFolderError(
                    f"{path}: {alive} connections alive in units {units}, but the round's "
                    f"metrics.json records {metrics['layer_alive']} in {metrics['units']}: "
                    "one of the two was changed."
                )
        return masks

    def round_state(self, index: int, which: str = "final") -> dict[str, torch.Tensor]:
        """Round ``index``'s start or final state; NaN or infinite values are refused."""
        path = self.round_file(index, which)
        state = self.load_tensors(path)
        # The final weights live on the round's mask (the start of a gradual round does
        # not: its mask is where the round ends).
        check_state(state, path, self.round_masks(index) if which == "final" else {})
        return state

    def write_summary(self, rows: Sequence[Mapping[str, Any]]) -> None:
        columns: list[str] = []
        for row in rows:
            columns.extend(key for key in row if key not in columns)
        write_csv(self.summary_path, rows, columns)

    def write_run_record(self, record: Mapping[str, Any]) -> None:
        write_text(self.run_path, json.dumps(record, indent=2) + "\n")


def member_dir(root: str | Path, seed: int) -> Path:
    """The run folder of ``seed`` in a group folder."""
    return Path(root) / f"seed_{seed}"


def is_group(path: str | Path) -> bool:
    return (Path(path) / GROUP_FILE).is_file()


def group_members(root: str | Path) -> list[tuple[int, Path]]:
    """(seed, run folder) of every member of the group folder ``root``, as recorded."""
    path = Path(root) / GROUP_FILE
    try:
        record = json.loads(read_text_or_missing(path))
        seeds = record["seeds"]
        if not isinstance(seeds, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
        ):
            raise ValueError("'seeds' must be a list of integers >= 0")
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing: {root} is not a group folder.") from None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise RunFolderError(f"{path} is not a readable group record: {error}.") from None
    return [(seed, member_dir(root, seed)) for seed in seeds]
