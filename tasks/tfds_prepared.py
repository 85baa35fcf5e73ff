"""Is a TFDS dataset downloaded and prepared? Refused early and clearly when it is not."""

from __future__ import annotations

import os

from tasks.tf_setup import tf


def check_tfds_dataset_prepared(name: str, data_dir: str | None = None) -> None:
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json")):
        searched = data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared (searched data dir {searched}). "
            f"Prepare it with `tfds build {name.split(':')[0]} --data_dir {searched}` on a "
            "machine with network access (or copy a prepared one there), or point "
            "FeedConfig.tfds_data_dir / TFDS_DATA_DIR at it.")


def under_tfds_mock() -> bool:
    """True inside `tfds.testing.mock_data`, which fakes every dataset (tests)."""
    import tensorflow_datasets as tfds

    prepare = tfds.core.DatasetBuilder.download_and_prepare
    return "testing" in getattr(prepare, "__module__", "")
