/*
 * pvh_entry.S: the second entry, for unmodified QEMU (-kernel image.elf).
 *
 * The Xen PVH ELF note (XEN_ELFNOTE_PHYS32_ENTRY) names pvh_start32. QEMU
 * enters it in 32-bit protected mode, paging off, ebx = GPA of struct
 * hvm_start_info. We clear bss, identity-map the first 1 GiB (4 KiB pages
 * for the first 2 MiB with page 0 left unmapped to catch NULL, as on
 * LightVM; 2 MiB pages above), load our own GDT, switch to long mode, build a struct
 * lvm_boot_info (lvm_pvh_init) and join the common path at _start.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PVH_MAP_PAGES 512            /* 2 MiB pages: 1 GiB */

    .section .note.Xen, "a", @note
    .balign 4
    .long 4                          /* namesz: "Xen\0" */
    .long 8                          /* descsz: entry GPA as a 64-bit value, as Linux does */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .quad pvh_start32

    .section .text.pvh, "ax", @progbits
    .code32
    .globl pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cli
    cld
    movl %ebx, %esi                  /* hvm_start_info; esi survives to 64-bit */

    /* The loader may not zero bss: do it here (PVH only). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] -> PT (4 KiB pages 1..511),
     * PD[i] -> i * 2 MiB (present, writable, large) for i >= 1. */
    movl $pvh_pdpt + 3, pvh_pml4
    movl $pvh_pd + 3, pvh_pdpt
    movl $pvh_pt + 3, pvh_pd
    movl $pvh_pt + 8, %edi
    movl $0x1003, %eax
    movl $511, %ecx
1:  movl %eax, (%edi)
    addl $8, %edi
    addl $0x1000, %eax
    loop 1b
    movl $pvh_pd + 8, %edi
    movl $0x200083, %eax
    movl $PVH_MAP_PAGES - 1, %ecx
2:  movl %eax, (%edi)
    addl $8, %edi
    addl $0x200000, %eax
    loop 2b

    lgdt pvh_gdt_desc
    movl %cr4, %eax
    orl $0x20, %eax                  /* PAE */
    movl %eax, %cr4
    movl $pvh_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx           /* EFER */
    rdmsr
    orl $0x100, %eax                 /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax            /* PG | PE */
    movl %eax, %cr0
    ljmp $0x08, $pvh_start64

    .code64
pvh_start64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $pvh_stack_top, %esp
    movl %esi, %edi
    call lvm_pvh_init                /* returns the struct lvm_boot_info * */
    movq %rax, %rdi
    jmp _start
    .size pvh_start32, . - pvh_start32

    .section .rodata.pvh, "a", @progbits
    .balign 8
pvh_gdt:
    .quad 0
    .quad 0x00af9b000000ffff         /* 0x08: 64-bit code, accessed */
    .quad 0x00cf93000000ffff         /* 0x10: data, accessed */
pvh_gdt_end:
pvh_gdt_desc:
    .word pvh_gdt_end - pvh_gdt - 1
    .long pvh_gdt

    .section .bss.pvh, "aw", @nobits
    .balign 4096
pvh_pml4:   .skip 4096
pvh_pdpt:   .skip 4096
pvh_pd:     .skip 4096
pvh_pt:     .skip 4096
pvh_stack:  .skip 16384
pvh_stack_top:
