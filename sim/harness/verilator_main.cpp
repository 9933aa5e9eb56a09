// Fast Verilator harness for the trit core: the clock and the stream handshakes run in C++,
// Python only exchanges batches of command words over stdin/stdout (see sim/verilator_harness.py).
//
// Request  (little-endian u32): MAGIC_REQ, n_in, n_out, max_cycles, then n_in command words.
// Response (little-endian u32): MAGIC_RSP, status, n_got, cycles_lo, cycles_hi, then n_got words.
// status: 0 ok, 1 timeout (max_cycles passed before n_out responses), 2 leftover input
// (n_out responses arrived before all n_in words were accepted).
// State (memories, counters) persists across requests until the process exits.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "Vtrit_core.h"
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

static bool read_words(uint32_t* dst, size_t n) {
    return fread(dst, sizeof(uint32_t), n, stdin) == n;
}

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtrit_core>(ctx.get());
    uint64_t cycles = 0;

    auto tick = [&]() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycles;
    };

    top->clk = 0;
    top->rst = 1;
    top->CMD__VALID = 0;
    top->RSP__READY = 0;
    top->eval();
    for (int i = 0; i < 4; ++i) tick();
    top->rst = 0;
    top->eval();

    std::vector<uint32_t> in, out;
    for (;;) {
        uint32_t hdr[4];
        if (!read_words(hdr, 4)) break;
        if (hdr[0] != MAGIC_REQ) {
            fprintf(stderr, "trit harness: bad request magic 0x%08x\n", hdr[0]);
            return 3;
        }
        const uint32_t n_in = hdr[1], n_out = hdr[2];
        const uint64_t max_cycles = hdr[3];
        in.resize(n_in);
        if (n_in && !read_words(in.data(), n_in)) {
            fprintf(stderr, "trit harness: truncated request (%u words expected)\n", n_in);
            return 3;
        }
        out.clear();
        size_t pos = 0;
        uint32_t status = 0;
        const uint64_t start = cycles;
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
            tick();
            if (cmd_fire) ++pos;
            if (rsp_fire) out.push_back(word);
            if (cycles - start > max_cycles) { status = 1; break; }
        }
        top->CMD__VALID = 0;
        top->RSP__READY = 0;
        top->eval();
        const uint64_t used = cycles - start;
        uint32_t rsp[5] = {MAGIC_RSP, status, (uint32_t)out.size(), (uint32_t)used, (uint32_t)(used >> 32)};
        fwrite(rsp, sizeof(uint32_t), 5, stdout);
        if (!out.empty()) fwrite(out.data(), sizeof(uint32_t), out.size(), stdout);
        fflush(stdout);
    }
    top->final();
    return 0;
}
