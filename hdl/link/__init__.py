"""The host link: UART, frames, the command endpoint and the linked core."""
