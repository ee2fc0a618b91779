"""Execution providers: which ONNX Runtime providers a classifier runs on, the same rule on both
backends (the Rust core's ``classifier::providers`` reads the same ``data/providers.json``).

``providers=`` takes what onnxruntime's ``InferenceSession`` takes: a list of provider names
or ``(name, options)`` pairs, in priority order.  ``device=`` is a shorthand for such a list:
``"cpu"``, ``"cuda"``/``"cuda:1"``, ``"tensorrt[:N]"``, ``"openvino[:CPU|GPU|NPU...]"``,
``"coreml"``, ``"directml[:N]"``.  Nothing falls back: a provider the loaded ONNX Runtime does
not have, or one that does not initialise, is a :class:`BackendUnavailableError` naming it,
what the runtime has, and what to install (docs/inference.md, "Execution providers").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "CPU",
    "DEVICES",
    "PROVIDERS",
    "PROVIDERS_FILE",
    "Provider",
    "add_provider_arguments",
    "check_available",
    "check_in_use",
    "describe",
    "device_help",
    "init_failed_message",
    "parse_provider",
    "provider_arguments",
    "resolve_providers",
]

PROVIDERS_FILE = Path(__file__).parent.parent / "data" / "providers.json"
_TABLE = json.loads(PROVIDERS_FILE.read_text(encoding="utf-8"))

#: The providers both backends can register: name -> {install, options, exact, changes}.
PROVIDERS: dict[str, dict[str, Any]] = _TABLE["providers"]
#: The ``device=`` shorthand: name -> {providers, index_option, index_kind}.
DEVICES: dict[str, dict[str, Any]] = _TABLE["devices"]
#: What runs when nothing is asked for.
CPU: str = _TABLE["default"]

#: One provider as both backends take it: (ONNX Runtime name, {option: value as a string}).
Provider = tuple[str, dict[str, str]]


def device_help() -> str:
    """The accepted ``device`` values, as error messages and ``--help`` list them (sorted, as
    the Rust core's table is)."""
    forms = {"int": ":N", "name": ":DEVICE_TYPE"}
    return ", ".join(
        name + (f"[{forms[DEVICES[name]['index_kind']]}]" if DEVICES[name]["index_kind"] else "")
        for name in sorted(DEVICES)
    )


def _from_device(device: str) -> list[Provider]:
    name, colon, index = device.partition(":")
    entry = DEVICES.get(name.lower())
    if entry is None or (colon and not entry["index_option"]):
        raise InvalidArgumentError(f"unknown device {device!r}; choose one of {device_help()}")
    options: dict[str, str] = {}
    if colon:
        if entry["index_kind"] == "int" and not (index.isascii() and index.isdigit()):
            raise InvalidArgumentError(f"device {device!r}: the index after ':' must be a number, got {index!r}")
        if not index:
            raise InvalidArgumentError(f"device {device!r}: nothing after ':'")
        options[entry["index_option"]] = index
    return [(p, {} if p == CPU else dict(options)) for p in entry["providers"]]


def _one(item: Any) -> Provider:
    if isinstance(item, str):
        name, raw = item, {}
    elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict):
        name, raw = item[0], item[1]
    else:
        raise InvalidArgumentTypeError(
            f"providers: each item must be a provider name or a (name, options dict) pair, got {item!r}"
        )
    entry = PROVIDERS.get(name)
    if entry is None:
        raise InvalidArgumentError(f"unknown execution provider {name!r}; known: {', '.join(sorted(PROVIDERS))}")
    options = {str(key): str(value) for key, value in raw.items()}  # as onnxruntime does
    allowed = entry["options"]
    if allowed != "any":
        extra = sorted(set(options) - set(allowed))
        if extra:
            takes = f"only {', '.join(allowed)}" if allowed else "none"
            raise InvalidArgumentError(f"{name} takes no option {extra[0]!r} (options it takes: {takes})")
    return name, options


def resolve_providers(providers: Any = None, device: str | None = None) -> tuple[Provider, ...]:
    """The providers to register, in priority order, from ``providers`` (names or
    ``(name, options)`` pairs) or the ``device`` shorthand; neither: the CPU provider."""
    if providers is not None and device is not None:
        raise InvalidArgumentError("give providers or device, not both")
    if device is not None:
        if not isinstance(device, str):
            raise InvalidArgumentTypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
        return tuple(_from_device(device))
    if providers is None:
        return ((CPU, {}),)
    items = [providers] if isinstance(providers, (str, tuple)) and _is_single(providers) else providers
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise InvalidArgumentTypeError(
            f"providers must be a list of provider names or (name, options) pairs, got {providers!r}"
        )
    resolved = [_one(item) for item in items]
    if not resolved:
        raise InvalidArgumentError("providers is empty; give at least one (or leave it None for the CPU)")
    names = [name for name, _ in resolved]
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgumentError(f"providers: {name} is given twice")
    return tuple(resolved)


def _is_single(value: Any) -> bool:
    """A bare name, or one bare ``(name, options)`` pair, given instead of a list."""
    return isinstance(value, str) or (len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict))


def _unavailable_message(name: str, available: Sequence[str]) -> str:
    return (
        f"execution provider {name} is not in the loaded ONNX Runtime, which has {', '.join(available)}; "
        f"to get it: {PROVIDERS[name]['install']}"
    )


def check_available(requested: Sequence[Provider], available: Sequence[str]) -> None:
    """Refuse the first requested provider the loaded ONNX Runtime was not built with."""
    for name, _ in requested:
        if name not in available:
            raise BackendUnavailableError(_unavailable_message(name, available))


def init_failed_message(name: str, reason: str) -> str:
    """The message of a provider the runtime has but that did not initialise."""
    return f"execution provider {name} failed to initialise: {reason}; to get it: {PROVIDERS[name]['install']}"


def check_in_use(requested: Sequence[Provider], in_use: Sequence[str]) -> None:
    """Refuse a session that does not use every requested provider (ONNX Runtime dropped one
    that failed to initialise: a fallback); the CPU provider it appends is not one."""
    for name, _ in requested:
        if name not in in_use:
            reason = f"the session runs on {', '.join(in_use)} only (ONNX Runtime's log says why); no fallback is taken"
            raise BackendUnavailableError(init_failed_message(name, reason))


def describe(in_use: Sequence[str]) -> str:
    """The providers in use as repr/info show them: ``CUDAExecutionProvider+CPUExecutionProvider``."""
    return "+".join(in_use)


# -- the command line (both CLIs take the same two options) --------------------------------------
def parse_provider(text: str) -> tuple[str, dict[str, str]]:
    """``--provider NAME[:KEY=VALUE,...]``: one provider and its options."""
    name, colon, rest = text.partition(":")
    options: dict[str, str] = {}
    for pair in rest.split(",") if colon else []:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InvalidArgumentError(f"--provider '{text}': options are KEY=VALUE pairs separated by commas")
        options[key] = value
    return name, options


def add_provider_arguments(parser: Any) -> None:
    """``--device`` and ``--provider`` on an argparse parser (one or the other)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--device", default=None, help=f"where the model runs: {device_help()} (default: cpu; data/providers.json)"
    )
    group.add_argument(
        "--provider",
        action="append",
        default=None,
        metavar="NAME[:KEY=VALUE,...]",
        help=f"an ONNX Runtime execution provider, in priority order (repeatable): {', '.join(sorted(PROVIDERS))}",
    )


def provider_arguments(args: Any) -> dict[str, Any]:
    """The ``providers=``/``device=`` keyword arguments of ``Classifier`` from parsed
    ``--provider``/``--device`` options (absent options: neither)."""
    names = getattr(args, "provider", None)
    return {
        "providers": [parse_provider(text) for text in names] if names else None,
        "device": getattr(args, "device", None),
    }
