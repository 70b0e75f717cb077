"""Exceptions raised by the package besides plain TypeError/ValueError from argument checks."""

from __future__ import annotations


class LibraryNotFoundError(RuntimeError):
    """No packaged native library fits this machine (or the override asks for one that is absent)."""


class LibraryLoadError(RuntimeError):
    """The chosen native library file exists but the operating system could not load it."""


class LibraryFallbackWarning(UserWarning):
    """No packaged library matches the GPU runtime exactly; a nearby version of the same major is used."""


class NativeError(RuntimeError):
    """A native call returned an error status.

    ``status`` is the BNB_* status code of csrc/bitsandbytes.h, ``status_name`` its name and
    ``detail`` the text of bnb_last_error().
    """

    def __init__(self, function: str, status: int, status_name: str, detail: str) -> None:
        self.function = function
        self.status = status
        self.status_name = status_name
        self.detail = detail
        super().__init__(f"{function} failed with {status_name} ({status}): {detail or 'no detail'}")


class NativeValueError(NativeError, ValueError):
    """A native call rejected its arguments (bad blocksize, quant type, argument or non-finite input)."""
