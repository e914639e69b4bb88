/*
 * entry.S: the LightVM entry point (see abi.h for the contract).
 *
 * The monitor enters here in long mode with rdi = GPA of struct
 * lvm_boot_info and rsp = top of RAM (16-byte aligned, so main's frame is
 * aligned as the SysV ABI wants after our call). bss is already zero: do
 * not clear it. This path is counted, instruction by instruction.
 */
    .section .text.entry, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    movq %rdi, lvm_bi(%rip)
    call main
    movl %eax, %edi
    call lvm_halt
    .size _start, . - _start
