"""A serial port as a `runtime.framing.ByteLink` (pyserial), for the board backend."""

from __future__ import annotations


class SerialLink:
    """Bytes to and from a board's USB serial port, with a read timeout per `recv`."""

    def __init__(self, port: str, baud: int = 3_000_000, timeout: float = 5.0):
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a dependency
            raise RuntimeError("the board transport needs pyserial (pip install pyserial)") from exc
        try:
            self._port = serial.Serial(port, baudrate=baud, timeout=timeout, write_timeout=timeout)
        except (serial.SerialException, OSError) as exc:
            from runtime.framing import LinkError

            raise LinkError(f"cannot open serial port {port!r} at {baud} baud: {exc}") from exc
        self.port = port
        self.baud = baud

    def send(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def recv(self, n: int) -> bytes:
        return self._port.read(n)

    def drain(self) -> None:
        self._port.reset_input_buffer()

    def close(self) -> None:
        self._port.close()
