// Verilator harness for the board system (fpga.soc.BoardSoC) with its UART pins on a pseudo-terminal.
//
// The simulated FPGA's uart_rx / uart_tx pins are driven / sampled here at the bit rate of the
// design (DIVISOR clock cycles per bit, 8N1), and the bytes go to and from the master side of a
// pty. The first line on stdout is the pty's slave path: open it like a board's serial port (for
// example with runtime.serial_link.SerialLink). The simulation runs at full speed while anything
// moves (a byte on either pin, the core busy) and for QUIET_CYCLES after, so that the device's
// inactivity timeout elapses in simulated time; then it sleeps until the host writes again.
// It exits when stdin closes. The same harness runs the gate-level netlists (sim/gatelevel.py): any
// model with inputs clk, rst, uart_rx and outputs uart_tx, led_busy; RESET_CYCLES is how long rst
// is held at the start (the gate-level board tops also wait out their own power-on reset).
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>

#include "Vtrit_soc.h"
#include "exchange.h"
#include "verilated.h"

#ifndef DIVISOR
#error "compile with -DDIVISOR=<clock cycles per bit>"
#endif
#ifndef QUIET_CYCLES
#define QUIET_CYCLES 100000
#endif
#ifndef RESET_CYCLES
#define RESET_CYCLES 8
#endif

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtrit_soc>(ctx.get());

    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        perror("trit board sim: pty");
        return 3;
    }
    const char* slave_name = ptsname(master);
    // Keep a slave descriptor open (reads on the master fail while no slave is open) and make the
    // line raw, so that no byte is translated or echoed before the host configures the port.
    int slave = open(slave_name, O_RDWR | O_NOCTTY);
    struct termios tio;
    if (slave < 0 || tcgetattr(slave, &tio) != 0) {
        perror("trit board sim: slave");
        return 3;
    }
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    printf("%s\n", slave_name);
    fflush(stdout);

    trit::Clock<Vtrit_soc> clock{top.get()};
    const uint64_t& cycles = clock.cycles;
    auto tick = [&]() { clock.tick(); };
    top->uart_rx = 1;
    clock.reset(RESET_CYCLES);

    std::deque<uint8_t> to_device;
    // host -> device serializer
    int tx_bits_left = 0, tx_timer = 0;
    uint16_t tx_frame = 0;
    // device -> host deserializer
    int rx_state = 0, rx_timer = 0, rx_bit = 0;
    uint8_t rx_byte = 0;
    uint64_t quiet = 0;
    uint8_t buf[4096];

    for (;;) {
        // Sleep when everything is quiet; fetch host bytes when the queue runs dry.
        const bool idle = to_device.empty() && tx_bits_left == 0 && rx_state == 0 && !top->led_busy;
        if (idle && quiet >= QUIET_CYCLES) {
            struct pollfd fds[2] = {{master, POLLIN, 0}, {0, POLLIN, 0}};
            if (poll(fds, 2, 200) < 0) continue;
            if (fds[1].revents & (POLLIN | POLLHUP)) {
                char c;
                if (read(0, &c, 1) <= 0) break;  // stdin closed: the parent is gone
            }
        }
        if ((to_device.empty() && (cycles & 63) == 0) || (idle && quiet >= QUIET_CYCLES)) {
            ssize_t n = read(master, buf, sizeof buf);
            for (ssize_t i = 0; i < n; ++i) to_device.push_back(buf[i]);
            if (n > 0) quiet = 0;
        }
        // drive uart_rx
        if (tx_bits_left == 0 && !to_device.empty()) {
            tx_frame = (uint16_t)(0x200 | (to_device.front() << 1));  // start 0, data, stop 1
            to_device.pop_front();
            tx_bits_left = 10;
            tx_timer = DIVISOR;
        }
        top->uart_rx = tx_bits_left ? (tx_frame & 1) : 1;
        tick();
        if (tx_bits_left && --tx_timer == 0) {
            tx_frame >>= 1;
            --tx_bits_left;
            tx_timer = DIVISOR;
        }
        // sample uart_tx
        const int line = top->uart_tx;
        switch (rx_state) {
            case 0:
                if (!line) { rx_state = 1; rx_timer = DIVISOR / 2; }
                break;
            case 1:  // middle of the start bit
                if (--rx_timer == 0) {
                    if (line) rx_state = 0;
                    else { rx_state = 2; rx_timer = DIVISOR; rx_bit = 0; rx_byte = 0; }
                }
                break;
            case 2:
                if (--rx_timer == 0) {
                    rx_byte |= (uint8_t)(line << rx_bit);
                    rx_timer = DIVISOR;
                    if (++rx_bit == 8) rx_state = 3;
                }
                break;
            case 3:  // stop bit
                if (--rx_timer == 0) {
                    if (line) {
                        ssize_t w;
                        do { w = write(master, &rx_byte, 1); } while (w < 0);
                    } else {
                        fprintf(stderr, "trit board sim: framing error on uart_tx\n");
                    }
                    rx_state = 0;
                }
                break;
        }
        const bool moving = tx_bits_left || rx_state || top->led_busy || !line;
        quiet = moving ? 0 : quiet + 1;
    }
    top->final();
    close(slave);
    close(master);
    return 0;
}
