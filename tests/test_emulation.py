"""The warm emulation service's protocol, from the check's side: a check trusts a service only
for what it said, and runs alone whenever the service never took its request."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from modelc_build.emulation import SERVICE_UNAVAILABLE, EmulationServices, _run_in_service, service_name


def one_connection(address: Path, replies: bytes) -> threading.Thread:
    """A stand-in service: takes one request, sends `replies`, closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(1)

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            if replies:
                connection.sendall(replies)
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("replies", "expected"), [
    (b"started\ndone\n", None),  # it ran the request: the result files are its word
    (b"", SERVICE_UNAVAILABLE),  # it closed without taking the request: run alone
    (b"started\n", "the emulation service ended while it ran this check"),  # a crash mid-check: said, not judged
])
def test_a_check_reads_what_the_service_said(tmp_path: Path, replies: bytes, expected: str | None) -> None:
    address = tmp_path / "service.sock"
    thread = one_connection(address, replies)
    assert _run_in_service(str(address), tmp_path, budget_s=5) == expected
    thread.join(timeout=5)


def test_a_service_that_is_gone_sends_the_check_to_a_process_of_its_own(tmp_path: Path) -> None:
    assert _run_in_service(str(tmp_path / "never-started.sock"), tmp_path, budget_s=5) == SERVICE_UNAVAILABLE
    gone = tmp_path / "gone.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(gone))
    listener.close()  # the socket file stays; nobody listens
    assert _run_in_service(str(gone), tmp_path, budget_s=5) == SERVICE_UNAVAILABLE


def test_services_are_one_per_emulator_cpu_and_backend_and_leave_nothing_behind(tmp_path: Path) -> None:
    """`true` as the emulator: each service exits at once, so its socket closes with it."""
    wanted = [("true", "Haswell", "openvino"), ("true", "Haswell", "onnxruntime"), ("true", "Haswell", "openvino")]
    services = EmulationServices(wanted, threads=1)
    assert services.addresses() == {}  # nothing before start
    services.start()
    try:
        addresses = services.addresses()
        assert set(addresses) == {service_name("true", "Haswell", "openvino"), service_name("true", "Haswell", "onnxruntime")}
        assert len(services.processes) == 2
        for address in addresses.values():
            assert Path(address).exists()
        for process in services.processes:
            process.wait(timeout=10)
        for address in addresses.values():  # its only listener is gone with it
            assert _run_in_service(address, tmp_path, budget_s=5) == SERVICE_UNAVAILABLE
        folder = services.folder
    finally:
        services.stop()
    assert folder is not None and not folder.exists() and services.processes == []


SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "amx_tile",
                   "gfni", "vaes", "vpclmulqdq", "fma"}
ALDER_LAKE = {"avx2", "avx_vnni", "gfni", "vaes", "vpclmulqdq", "fma"}  # AVX-VNNI without AVX-512
HASWELL_PROBE = {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False, "AVX512BF16": False, "GFNI": False,
                 "VAES": False, "VPCLMULQDQ": False}


@pytest.mark.parametrize("host", [SAPPHIRE_RAPIDS, ALDER_LAKE], ids=["sapphire-rapids", "alder-lake"])
def test_an_emulated_haswell_is_pre_vnni_whatever_the_host_lists(monkeypatch, host: set[str]) -> None:
    """Under QEMU /proc/cpuinfo is the host's; CPUID (numpy's probe) is the emulated CPU's. A host's
    AVX-VNNI or AMX, which numpy cannot probe, must not make an emulated Haswell a VNNI CPU (it
    picked the u8s8 VNNI layout there, which saturates on pre-VNNI kernels)."""
    import numpy as np

    from modelc_build import host as host_module

    monkeypatch.setattr(np._core._multiarray_umath, "__cpu_features__", HASWELL_PROBE, raising=False)
    flags, emulated = host_module._as_executed(set(host))
    assert emulated and host_module.kernel_class(flags) == "avx2"
    assert not flags & {"avx_vnni", "avx512_vnni", "amx_int8"}
    native = {name: True for name in HASWELL_PROBE}
    monkeypatch.setattr(np._core._multiarray_umath, "__cpu_features__", native, raising=False)
    assert host_module._as_executed(set(host)) == (set(host), False)  # natively, /proc/cpuinfo stands


def test_a_slow_emulated_run_that_keeps_writing_outputs_is_waited_for_and_a_stalled_one_is_not(tmp_path, monkeypatch) -> None:
    """A heavy model's samples can take a minute each under emulation: slow is not broken. The run
    is given up only when it writes nothing (no canary, no output) for STALL_S."""
    import threading
    import time

    from modelc_build import emulation

    monkeypatch.setattr(emulation, "STALL_S", 0.6)
    monkeypatch.setattr(emulation, "STARTUP_ALLOWANCE_S", 0.0)
    done = threading.Event()

    def slow_run() -> None:
        for number in range(6):  # 1.8 s in all, longer than STALL_S, with progress every 0.3 s
            time.sleep(0.3)
            (tmp_path / f"output-{number:06d}.npz").write_bytes(b"x")
        done.set()

    threading.Thread(target=slow_run).start()
    assert emulation._wait_while_progressing(lambda window: done.wait(min(window, 0.1)), tmp_path, 0.0) is None
    stalled = tmp_path / "stalled"
    stalled.mkdir()
    started = time.monotonic()
    problem = emulation._wait_while_progressing(lambda window: time.sleep(min(window, 0.1)) or False, stalled, 0.0)
    assert problem is not None and problem.startswith("made no progress for") and time.monotonic() - started < 3


def test_an_emulated_output_of_another_shape_is_the_artifacts_fault_naming_both_shapes() -> None:
    """OpenVINO's INT8 MobileNetV2 on an emulated Cortex-A72 returned logits of shape [0, 1000]:
    judged a failed check on that CPU, never scored as if it were a result."""
    import numpy as np

    from modelc_build.steps.verify import _shape_fault

    native = [{"logits": np.zeros((1, 1000), np.float32)}]
    assert _shape_fault("cortex-a72", [{"logits": np.zeros((1, 1000), np.float32)}], native) is None
    fault = _shape_fault("cortex-a72", [{"logits": np.zeros((0, 1000), np.float32)}], native)
    assert fault == ("the artifact gave shape [0, 1000] for 'logits' on cortex-a72 (sample 0), where this machine gives "
                     "shape [1, 1000]: it does not compute this model on that CPU")
    assert "no output for 'logits'" in (_shape_fault("cortex-a72", [{}], native) or "")
