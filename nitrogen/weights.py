"""Getting ``ng.pt``: use the local file, else download it once from the Hugging Face hub."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import CheckpointError

logger = logging.getLogger(__name__)

HF_REPO_ID = "nvidia/NitroGen"
HF_FILENAME = "ng.pt"
DEFAULT_CHECKPOINT = Path("models") / HF_FILENAME


def ensure_checkpoint(path: str | Path = DEFAULT_CHECKPOINT) -> Path:
    """Return ``path`` if it exists; if it is an absent ``ng.pt``, download it into its folder.

    huggingface_hub gives the progress bar, resumes partial downloads and honours ``HF_TOKEN`` and
    ``HF_HUB_OFFLINE``. Any other missing file is an error: we only know where ``ng.pt`` comes from.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.name != HF_FILENAME:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return download_checkpoint(path.parent)


def download_checkpoint(models_dir: str | Path) -> Path:
    models_dir = Path(models_dir)
    target = models_dir / HF_FILENAME
    logger.info("%s not found: downloading %s from the Hugging Face repo %s (about 2 GB)...",
                target, HF_FILENAME, HF_REPO_ID)
    try:
        from huggingface_hub import hf_hub_download

        models_dir.mkdir(parents=True, exist_ok=True)
        got = Path(hf_hub_download(repo_id=HF_REPO_ID, filename=HF_FILENAME, local_dir=models_dir))
    except Exception as exc:  # offline, 401, disk full...: one actionable message
        raise CheckpointError(
            f"could not download {HF_FILENAME} from https://huggingface.co/{HF_REPO_ID} ({type(exc).__name__}: "
            f"{exc}). Download it yourself and put it at {target.resolve()} "
            "(set HF_TOKEN if the repo needs a login), or pass --checkpoint demo to try the stack."
        ) from exc
    if got.resolve() != target.resolve():
        got.replace(target)
    logger.info("downloaded %s", target)
    return target
