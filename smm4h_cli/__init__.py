"""smm4h: will LLM-generated positive examples help my classifier, and if not, why not?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smm4h")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
