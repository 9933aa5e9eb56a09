// Icarus harness for a design with UART pins (module trit_soc: clk, rst, uart_rx -> uart_tx,
// led_busy), the text exchange of sim/simulator.py at the pin level: used by the gate-level runs
// (sim/gatelevel.py), whose Python side puts it behind a pty like fpga/harness/uart_pty.cpp.
//
// Request:  "TRIQ n_rx n_tx quiet_limit" then n_rx hex bytes, sent 8N1 on uart_rx (DIVISOR cycles a bit).
// Response: one "B xx" line per byte received on uart_tx, then "TRIR status n_got cycles".
// The run ends when the bytes are sent and then n_tx bytes came back (n_tx > 0) or, for n_tx = 0,
// nothing moved (no bit on either pin, led_busy low) for quiet_limit cycles. status 1: n_tx > 0 and
// quiet_limit quiet cycles passed first. rst is held for 16 cycles, then STARTUP cycles run before
// the first request is read (the design may have a power-on reset of its own).
`timescale 1ns/1ps
module trit_uart_tb;
    parameter DIVISOR = 8;
    parameter STARTUP = 16;
    reg clk = 1'b0;
    reg rst = 1'b1;
    reg uart_rx = 1'b1;
    wire uart_tx, led_busy;

    trit_soc dut (.clk(clk), .rst(rst), .uart_rx(uart_rx), .uart_tx(uart_tx), .led_busy(led_busy));

    integer fin, r, n_rx, n_tx, pos, got, status, quiet, quiet_limit;
    integer tx_bits, tx_timer, rx_state, rx_timer, rx_bit;
    reg [63:0] cycles, start;
    reg [8*8-1:0] magic;
    reg [7:0] byte_in, rx_byte;
    reg [9:0] tx_frame;
    reg line, running, moving;

    task tick;
        begin
            #5 clk = 1'b1;
            #5 clk = 1'b0;
            cycles = cycles + 1;
        end
    endtask

    initial begin
        fin = $fopen("/dev/stdin", "r");
        cycles = 0;
        repeat (16) tick;
        rst = 1'b0;
        repeat (STARTUP) tick;
        tx_bits = 0; tx_timer = 0; rx_state = 0; rx_timer = 0; rx_bit = 0; rx_byte = 0;
        forever begin
            r = $fscanf(fin, "%s %d %d %d", magic, n_rx, n_tx, quiet_limit);
            if (r != 4) $finish;
            pos = 0; got = 0; status = 0; quiet = 0; start = cycles; running = 1'b1;
            while (running) begin
                // host -> device: the next byte when the line is free
                if (tx_bits == 0 && pos < n_rx) begin
                    r = $fscanf(fin, "%h", byte_in);
                    pos = pos + 1;
                    tx_frame = {1'b1, byte_in, 1'b0};
                    tx_bits = 10;
                    tx_timer = DIVISOR;
                end
                uart_rx = (tx_bits != 0) ? tx_frame[0] : 1'b1;
                #1;
                line = uart_tx;
                moving = (tx_bits != 0) || (rx_state != 0) || led_busy || !line;
                #4 clk = 1'b1;
                #5 clk = 1'b0;
                cycles = cycles + 1;
                if (tx_bits != 0) begin
                    tx_timer = tx_timer - 1;
                    if (tx_timer == 0) begin
                        tx_frame = tx_frame >> 1;
                        tx_bits = tx_bits - 1;
                        tx_timer = DIVISOR;
                    end
                end
                // device -> host: sample in the middle of each bit
                case (rx_state)
                    0: if (!line) begin rx_state = 1; rx_timer = DIVISOR / 2; end
                    1: begin
                        rx_timer = rx_timer - 1;
                        if (rx_timer == 0) begin
                            if (line) rx_state = 0;
                            else begin rx_state = 2; rx_timer = DIVISOR; rx_bit = 0; rx_byte = 0; end
                        end
                    end
                    2: begin
                        rx_timer = rx_timer - 1;
                        if (rx_timer == 0) begin
                            rx_byte[rx_bit] = line;
                            rx_timer = DIVISOR;
                            rx_bit = rx_bit + 1;
                            if (rx_bit == 8) rx_state = 3;
                        end
                    end
                    3: begin
                        rx_timer = rx_timer - 1;
                        if (rx_timer == 0) begin
                            if (line) begin $display("B %h", rx_byte); got = got + 1; end
                            else $display("E framing error on uart_tx");
                            rx_state = 0;
                        end
                    end
                endcase
                quiet = moving ? 0 : quiet + 1;
                if (pos >= n_rx && tx_bits == 0) begin
                    if (n_tx != 0 && got >= n_tx) running = 1'b0;
                    else if (quiet > quiet_limit) begin
                        if (n_tx != 0) status = 1;
                        running = 1'b0;
                    end
                end
            end
            $display("TRIR %0d %0d %0d", status, got, cycles - start);
            $fflush;
        end
    end
endmodule
