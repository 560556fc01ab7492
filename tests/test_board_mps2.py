"""The Cortex-M targets (the QEMU boards targets/mps2-an386 and targets/mps3-an547, and every real board: kind = "board").

(a) Every Cortex-M firmware compiles with arm-none-eabi-gcc (-std=c99 -Wall -Wextra -Werror, through
    tsptq.deploy.targets.build), without a model and with a small model baked into flash, and its sections fit the memory
    its target.toml declares.
(b) The QEMU boards' firmware under qemu-system-arm (-icount shift=0, UART0 on a local TCP socket): HELLO, fashion-vit
    (exported with tsptq) bit-exact with the Python integer reference, SysTick tick counts, PROFILE op names, an upload
    over the UART, and a real NVIC_SystemReset (QEMU restarts the machine, the BOOT frame arrives, the flashed model
    is back).

The UART of QEMU's mps2 moves one byte per main-loop iteration of QEMU (about 5-15 KB/s here), so the quick tests
bake fashion-vit (317 KB) into the firmware, as a real board would flash it, and upload only a small model; the
upload of fashion-vit itself is the `slow` test.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from tsptq.deploy.targets import build, list_targets, load_target, start_board

MPS2 = "mps2-an386"
QEMU_BOARDS = [n for n in list_targets() if load_target(n).kind == "qemu-system"]  # mps2-an386 (M4), mps3-an547 (M55)


def cortex_m_targets() -> list[str]:
    return [n for n in list_targets() if load_target(n).kind in ("qemu-system", "board")]


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install --no-install-recommends "
                    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")


def sections(exe) -> dict[str, tuple[int, int]]:
    """{section: (size, address)} from `arm-none-eabi-size -A`."""
    out = subprocess.run(["arm-none-eabi-size", "-A", str(exe)], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


def symbol(exe, name: str) -> int | None:
    out = subprocess.run(["arm-none-eabi-nm", str(exe)], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^([0-9a-f]+) \w {name}$", out, re.MULTILINE)
    return int(m.group(1), 16) if m else None


def symbol_size(exe, name: str) -> int | None:
    out = subprocess.run(["arm-none-eabi-nm", "-S", str(exe)], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^[0-9a-f]+ ([0-9a-f]+) \w {name}$", out, re.MULTILINE)
    return int(m.group(1), 16) if m else None


def define(target, name: str) -> int:
    values = [int(f.split("=", 1)[1]) for f in target.cflags if f.startswith(f"-D{name}=")]
    assert len(values) == 1, f"{target.name}: cflags must define {name} once"
    return values[0]


def export(model_name: str, cfg_override=None):
    """(tflite bytes, int8 input codes of a few images, the Python integer model's outputs, the IntModel)."""
    from tsptq.data import datasets
    from tsptq.model import zoo
    from tsptq.quant.observers import record
    from tsptq.errors import DataError
    from tsptq.intmodel.lower import lower
    from tsptq.quant.quantize import quantize
    from tsptq.quant.qvit import Graph
    from tsptq.tflite.writer import to_tflite
    from tsptq.tflite.reader import parse_tflite

    if cfg_override is None:
        model = zoo.load_reference(model_name)
        try:
            cal = datasets.load_fashion_mnist("train").balanced(32)
            test = datasets.load_fashion_mnist("test").take(6)
        except DataError:  # bit-exactness does not need real images
            cal = test = None
    else:
        import torch

        from tsptq.model.vit import VisionTransformer

        torch.manual_seed(0)
        model = VisionTransformer(cfg_override).eval()
        cal = test = None
    cfg = model.cfg
    if cal is None:
        rng = np.random.default_rng(0)
        cal = test = datasets.ImageSet(rng.integers(0, 256, (16, cfg.img_size, cfg.img_size, cfg.in_chans),
                                                    dtype=np.uint8), np.zeros(16, np.int64), "random")
    graph = Graph.from_model(model)
    data = to_tflite(lower(quantize(graph, record(graph, cal, 16, False), "tsptq", progress=False)))
    fm = parse_tflite(data)
    x = fm.quantize_input(datasets.to_model_input(test.images[:6], cfg).numpy())
    return data, x, fm.run(x), fm


@pytest.fixture(scope="module")
def tiny():
    """A 1-block random ViT on 8x8 images: a model of a few KB, quick to upload over QEMU's UART."""
    from tsptq.model.vit import ViTConfig

    cfg = ViTConfig(img_size=8, patch_size=4, in_chans=3, num_classes=3, embed_dim=16, depth=1, num_heads=2,
                    mlp_hidden=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    return export("tiny", cfg)


@pytest.fixture(scope="module")
def fashion():
    return export("fashion-vit")


# ---- (a) every Cortex-M firmware compiles and fits ------------------------------------------------------------

def test_the_real_boards_are_described():
    boards = [n for n in list_targets() if load_target(n).kind == "board"]
    assert {"stm32f746g-disco", "nucleo-h743zi"} <= set(boards)
    for n in boards:
        t = load_target(n)
        assert t.link == "port" and t.tick_unit == "cycles" and t.tick_hz > 0
        assert t.flash and "{elf}" in t.flash and t.flash_capacity > 0 and t.ram_capacity > 0


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("name", cortex_m_targets())
def test_firmware_compiles_and_fits(name, tiny):
    need_tools("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm")
    t = load_target(name)
    # the firmware's buffers are sized by these defines; HELLO reports them and the host trusts target.toml
    assert define(t, "TQ_MODEL_CAPACITY") == t.model_capacity
    assert define(t, "TQ_ARENA_CAPACITY") == t.arena_capacity
    plain = sections(build(t))
    model = tiny[0]
    exe = build(t, embed_model=model)
    embedded = sections(exe)
    addr = symbol(exe, "tq_embedded_model")
    assert addr is not None and addr % 16 == 0
    # the model's bytes are read-only data of the firmware (the section's growth is no measure: the 16-byte aligned
    # array can take the plain build's tail padding)
    rodata_size, rodata_at = embedded[".rodata"]
    assert symbol_size(exe, "tq_embedded_model") >= len(model)
    assert rodata_at <= addr and addr + len(model) <= rodata_at + rodata_size
    for s in (plain, embedded):
        flash = sum(s[k][0] for k in (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data") if k in s)
        assert flash <= t.flash_capacity
        assert s[".isr_vector"][1] in (0, 0x08000000)  # the vector table at the start of flash
        assert s[".arena"][0] == t.arena_capacity and s[".arena"][1] % 16 == 0
        if name == "mps3-an547":  # the upload buffer and the arena in DDR; .data/.bss/stack in the 2 MiB SRAM
            assert s[".model_buf"][1] >= 0x60000000 and s[".arena"][1] >= 0x60000000
            assert s[".data"][0] + s[".bss"][0] + 64 * 1024 <= 2 << 20
        if name == MPS2:  # the upload buffer and the arena are in PSRAM; .data/.bss/stack in the 4 MiB RAM
            assert s[".model_buf"][0] == t.model_capacity and s[".model_buf"][1] >= 0x21000000
            assert s[".arena"][1] >= 0x21000000
            assert s[".data"][0] + s[".bss"][0] + 64 * 1024 <= 4 << 20
        # everything in RAM (what `size` counts as data + bss) within the RAM target.toml declares
        assert sum(v[0] for k, v in s.items() if k in (".stack", ".data", ".bss", ".arena", ".model_buf")) \
            <= t.ram_capacity


# ---- (b) mps2-an386 under QEMU -----------------------------------------------------------------------------------

def open_board(target, exe):
    from tsptq.deploy.board import Board
    from tsptq.deploy.serial_link import Link

    rb = start_board(target, exe)
    link = Link(rb.serial, rb.url, timeout=5.0, retries=2)
    assert link.wait_boot(10), "no BOOT frame from the firmware"
    return rb, link, Board(link, invoke_timeout=60.0)


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("name", QEMU_BOARDS)
def test_qemu_board_runs_fashion_vit_bit_exact_and_resets(name, fashion, tiny):
    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    from tsptq.deploy.serial_link import crc32

    t = load_target(name)
    data, x, y, fm = fashion
    rb, link, board = open_board(t, build(t, embed_model=data))
    with rb:
        info = board.hello()
        assert (info.board, info.tick_unit, info.tick_hz) == (name, "systick", t.tick_hz)
        assert (info.model_capacity, info.arena_capacity) == (t.model_capacity, t.arena_capacity)
        assert (info.model_size, info.model_crc) == (len(data), crc32(data))  # committed at boot from flash
        assert board.upload(data).skipped

        ticks = []
        for i in range(3):
            r = board.infer(x[i].tobytes())
            assert r.output == y[i].tobytes(), f"image {i}: the board's output differs from the integer reference"
            ticks.append(r.ticks)
        assert min(ticks) > 0
        # -icount: the count is deterministic up to the phase of the tick (40 or 31.25 instructions)
        assert abs(board.infer(x[0].tobytes()).ticks - ticks[0]) <= 1
        rows = board.profile()
        assert [op for op, _ in rows] == [op.kind for op in fm.ops]
        op_ticks = sum(k for _, k in rows)
        assert 0.95 * ticks[0] <= op_ticks <= ticks[0] + 1
        print(f"\nfashion-vit on {name}: {ticks[0]:,} SysTick ticks = {ticks[0] * t.instructions_per_tick:,.0f} "
              f"instructions per inference")

        # an upload over the UART replaces the flashed model
        small, xs, ys, _ = tiny
        commit = board.upload(small)
        assert not commit.skipped and commit.input_bytes == xs[0].nbytes
        for i in range(2):
            assert board.infer(xs[i].tobytes()).output == ys[i].tobytes()

        # RESET is NVIC_SystemReset: QEMU restarts the machine (it does not exit), BOOT arrives, the flashed model is
        # committed again and the uploaded one is gone
        boots = link.counters["boots"]
        assert board.reset() is True and link.counters["boots"] == boots + 1
        assert rb.alive(), "QEMU exited on NVIC_SystemReset"
        info = board.hello()
        assert (info.model_size, info.model_crc) == (len(data), crc32(data))
        assert board.infer(x[1].tobytes()).output == y[1].tobytes()


@pytest.mark.slow
@pytest.mark.qemu
def test_the_boards_tick_constants_agree(fashion):
    """Built to run the same C (the DSP-extension kernels: the M55 firmware with -DTSPTQ_NO_MVE), both boards'
    instruction counts for one image, read through each target's instructions_per_tick (40 at 25 MHz, 31.25 at
    32 MHz), must be close: a wrong clock constant would put them 25% or more apart. The M55's default firmware (its
    Helium kernels) must give the same bytes in clearly fewer instructions."""
    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    data, x, y, _ = fashion
    instructions, helium = {}, {}
    for name in QEMU_BOARDS:
        t = load_target(name)
        m55 = "-mcpu=cortex-m55" in t.cflags
        for flags in ((("-DTSPTQ_NO_MVE",), ()) if m55 else ((),)):
            rb, _, board = open_board(t, build(t, embed_model=data, extra_flags=flags))
            with rb:
                r = board.infer(x[0].tobytes())
                assert r.output == y[0].tobytes()
            (instructions if flags or not m55 else helium)[name] = r.ticks * t.instructions_per_tick
    assert len(instructions) >= 2 and max(instructions.values()) / min(instructions.values()) < 1.12, instructions
    assert helium and all(n < 0.9 * instructions[name] for name, n in helium.items()), (helium, instructions)


@pytest.mark.slow
@pytest.mark.qemu
def test_mps2_without_a_model_reports_none_and_rejects_inference(tiny):
    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    from tsptq.deploy.serial_link import STATUS_CODES, DeviceError

    t = load_target(MPS2)
    rb, _, board = open_board(t, build(t))
    with rb:
        assert board.hello().model_size == 0
        with pytest.raises(DeviceError) as e:
            board.infer(tiny[1][0].tobytes())
        assert e.value.status == STATUS_CODES["NO_MODEL"]


@pytest.mark.qemu
@pytest.mark.slow
def test_mps2_uploads_fashion_vit(fashion):
    """The whole 317 KB model over QEMU's UART (30-80 s here), then bit-exact inferences."""
    need_tools("arm-none-eabi-gcc", "qemu-system-arm")
    t = load_target(MPS2)
    data, x, y, _ = fashion
    rb, _, board = open_board(t, build(t))
    with rb:
        t0 = time.monotonic()
        commit = board.upload(data)
        seconds = time.monotonic() - t0
        assert not commit.skipped and commit.n_ops == len(fashion[3].ops)
        print(f"\nuploaded {len(data):,} bytes in {seconds:.1f} s ({len(data) / seconds / 1e3:.1f} KB/s)")
        for i in range(len(x)):
            assert board.infer(x[i].tobytes()).output == y[i].tobytes()
