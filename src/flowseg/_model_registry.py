"""Where models live: re-exports :mod:`flowseg.engine.io.registry` under its former name.

The registry itself (bundled, user and Cellpose model folders, name resolution, checkpoint
folder) is engine code, shared by the napari widget, the CLI and ``Model.load``.
"""

from __future__ import annotations

from .engine.io.registry import (
                              MODEL_SUFFIXES,
                              ModelEntry,
                              available_models,
                              bundled_models,
                              checkpoint_dir,
                              default_checkpoint_path,
                              find_model,
                              model_entries,
                              user_model_dir,
                              user_model_path,
                              user_models,
                              valid_model_name,
)

__all__ = ["MODEL_SUFFIXES", "ModelEntry", "available_models", "bundled_models",
           "checkpoint_dir", "default_checkpoint_path", "find_model", "model_entries",
           "user_model_dir", "user_model_path", "user_models", "valid_model_name"]
