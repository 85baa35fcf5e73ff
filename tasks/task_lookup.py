"""A task or mixture by name, refused early (with close names, or how to prepare its TFDS
dataset) before any pipeline is built."""

from __future__ import annotations

import difflib

import seqio

from tasks.tfds_prepared import check_tfds_dataset_prepared, under_tfds_mock


def lookup(name: str):
    """The seqio Task or Mixture called `name`, or an error listing close names."""
    tasks, mixtures = seqio.TaskRegistry.names(), seqio.MixtureRegistry.names()
    if name in tasks or name in mixtures:
        return seqio.get_mixture_or_task(name)
    close = difflib.get_close_matches(name, list(tasks) + list(mixtures), n=5, cutoff=0.5)
    raise ValueError(f"unknown task or mixture {name!r}; "
                     + (f"did you mean {close}?" if close else
                        f"registered: {sorted(tasks) + sorted(mixtures)}"))


def _tfds_sources(provider) -> list:
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    return [t.source for t in tasks if isinstance(t.source, seqio.TfdsDataSource)]


def check_tfds_prepared(provider, data_dir: str | None) -> None:
    """Refuse, early and clearly, a TFDS dataset that was never downloaded and prepared."""
    for source in _tfds_sources(provider):
        check_tfds_dataset_prepared(source.tfds_dataset.name, data_dir)


def require_prepared(provider, data_dir: str | None = None) -> None:
    """check_tfds_prepared, except under tfds.testing.mock_data (which fakes every dataset)."""
    if not under_tfds_mock():
        check_tfds_prepared(provider, data_dir)
