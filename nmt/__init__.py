"""nmt: train and compare RNN, RNN+attention and Transformer translation models."""
__version__ = "0.1.0"

# The Python API (nmt/api.py), imported on first use so that `import nmt` stays light (no torch).
# The comparison entry point is nmt.api.compare: `nmt.compare` is the subpackage nmt/compare/.
_API = ("Translator", "train")


def __getattr__(name: str):
    if name in _API:
        from nmt import api

        return getattr(api, name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
