/* The protected-mode part of our bzImage test guest: 0x200 bytes where a
 * 32-bit entry would be (hlt: LightVM never enters there), then the 64-bit
 * entry the boot protocol uses, %rsi = the zero page. */
	.section .text.entry, "ax"
	.code64
	.globl _start
_start:
	.fill 0x200, 1, 0xf4
startup_64:
	cli
	lea stack_top(%rip), %rsp
	mov %rsi, %rdi
	call probe_main
1:	hlt
	jmp 1b

	.section .bss
	.balign 16
	.space 16384
stack_top:
