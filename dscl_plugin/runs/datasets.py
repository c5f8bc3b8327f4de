"""The datasets a run's config names, with errors that name the config keys."""

from dscl_plugin.data import ImageDataset, build_dataset
from dscl_plugin.data.base import Transform
from dscl_plugin.errors import ConfigError
from dscl_plugin.training.schema import Config


def build_dataset_split(config: Config, split: str, transform: Transform | None) -> ImageDataset:
    """The ``split`` of ``config.data``'s dataset with ``transform``.

    Raises:
        ConfigError: the data are not where ``data.root`` (or a list file) points, on one
            line naming the key and the fix.
    """
    d = config.data
    try:
        return build_dataset(
            d.name,
            split,
            transform,
            root=d.root,
            imbalance_factor=d.imbalance_factor,
            input_size=d.input_size,
            download=d.download,
            seed=config.seed,
            list_file=d.train_list if split == "train" else d.test_list,
        )
    except FileNotFoundError as error:
        message = " ".join(str(error).split())  # one line
        raise ConfigError(f"data.root ({d.root!r}) for data.name={d.name}: {message}") from None
