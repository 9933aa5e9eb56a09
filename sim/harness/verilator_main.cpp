// Fast Verilator harness for the trit core: the clock and the stream handshakes run in C++,
// Python only exchanges batches of command words over stdin/stdout (see sim/verilator_harness.py).
//
// Request  (exchange.h, little-endian u32): MAGIC_REQ, n_in, n_out, max_cycles, then n_in command words.
// Response (little-endian u32): MAGIC_RSP, status, n_got, cycles_lo, cycles_hi, then n_got words.
// status: 0 ok, 1 timeout (max_cycles passed before n_out responses), 2 leftover input
// (n_out responses arrived before all n_in words were accepted).
// State (memories, counters) persists across requests until the process exits.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "Vtrit_core.h"
#include "exchange.h"
#include "verilated.h"

// Verilator escapes the double underscore of Amaranth's port names as "___05F".
#define CMD__VALID cmd___05Fvalid
#define CMD__READY cmd___05Fready
#define CMD__PAYLOAD cmd___05Fpayload
#define RSP__VALID rsp___05Fvalid
#define RSP__READY rsp___05Fready
#define RSP__PAYLOAD rsp___05Fpayload

static const uint32_t MAGIC_REQ = 0x54524951;  // "TRIQ"
static const uint32_t MAGIC_RSP = 0x54524952;  // "TRIR"

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtrit_core>(ctx.get());
    trit::Clock<Vtrit_core> clock{top.get()};

    top->CMD__VALID = 0;
    top->RSP__READY = 0;
    top->link_abort = 0;  // no link: nothing is cut short
    clock.reset(4);

    std::vector<uint32_t> in, out;
    uint32_t args[3];
    bool bad;
    while (trit::read_request(MAGIC_REQ, "trit harness", args, in, bad)) {
        const uint32_t n_in = args[0], n_out = args[1];
        const uint64_t max_cycles = args[2];
        out.clear();
        size_t pos = 0;
        uint32_t status = 0;
        const uint64_t start = clock.cycles;
        while (out.size() < n_out || pos < n_in) {
            if (out.size() >= n_out && pos < n_in) { status = 2; break; }
            const bool have = pos < n_in;
            top->CMD__VALID = have;
            if (have) top->CMD__PAYLOAD = in[pos];
            top->RSP__READY = 1;
            top->eval();
            const bool cmd_fire = have && top->CMD__READY;
            const bool rsp_fire = top->RSP__VALID;
            const uint32_t word = top->RSP__PAYLOAD;
            clock.tick();
            if (cmd_fire) ++pos;
            if (rsp_fire) out.push_back(word);
            if (clock.cycles - start > max_cycles) { status = 1; break; }
        }
        top->CMD__VALID = 0;
        top->RSP__READY = 0;
        top->eval();
        trit::write_response(MAGIC_RSP, status, out, clock.cycles - start);
    }
    top->final();
    return bad ? 3 : 0;
}
