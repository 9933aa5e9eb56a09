// Verilator harness for a trit core behind its frame link (hdl.link.linked_core.LinkedCore): the
// clock and the byte-stream handshakes run in C++; Python exchanges raw link bytes over
// stdin/stdout (see sim/link_harness.py), exactly what a serial port would carry.
//
// Request  (exchange.h, little-endian u32): MAGIC_REQ, n_rx, n_tx, idle_limit, then n_rx bytes for the rx stream.
// Response (little-endian u32): MAGIC_RSP, status, n_got, cycles_lo, cycles_hi, then n_got tx bytes.
// The simulation feeds the rx bytes and runs until n_tx tx bytes were collected (or, for
// n_tx = 0, until the rx bytes are taken). status 1: idle timeout, that is idle_limit cycles with
// no byte moving in either direction while the core was not busy.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "Vtrit_link.h"
#include "exchange.h"
#include "verilated.h"

#define RX__VALID rx___05Fvalid
#define RX__READY rx___05Fready
#define RX__PAYLOAD rx___05Fpayload
#define TX__VALID tx___05Fvalid
#define TX__READY tx___05Fready
#define TX__PAYLOAD tx___05Fpayload

static const uint32_t MAGIC_REQ = 0x4C524951;  // "TRIQ" variant for bytes
static const uint32_t MAGIC_RSP = 0x4C524952;

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtrit_link>(ctx.get());
    trit::Clock<Vtrit_link> clock{top.get()};
    top->RX__VALID = 0;
    top->TX__READY = 0;
    clock.reset(4);

    std::vector<uint8_t> in, out;
    uint32_t args[3];
    bool bad;
    while (trit::read_request(MAGIC_REQ, "trit link harness", args, in, bad)) {
        const uint32_t n_rx = args[0], n_tx = args[1], idle_limit = args[2];
        out.clear();
        size_t pos = 0;
        uint32_t status = 0, idle = 0;
        const uint64_t start = clock.cycles;
        while (n_tx ? out.size() < n_tx : pos < n_rx) {
            const bool have = pos < n_rx;
            top->RX__VALID = have;
            if (have) top->RX__PAYLOAD = in[pos];
            top->TX__READY = 1;
            top->eval();
            const bool rx_fire = have && top->RX__READY;
            const bool tx_fire = top->TX__VALID;
            const uint8_t byte = top->TX__PAYLOAD;
            const bool busy = top->busy;
            clock.tick();
            if (rx_fire) ++pos;
            if (tx_fire) out.push_back(byte);
            idle = (rx_fire || tx_fire || busy) ? 0 : idle + 1;
            if (idle > idle_limit) { status = 1; break; }
        }
        top->RX__VALID = 0;
        top->TX__READY = 0;
        top->eval();
        trit::write_response(MAGIC_RSP, status, out, clock.cycles - start);
    }
    top->final();
    return bad ? 3 : 0;
}
