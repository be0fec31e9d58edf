; A tiny UEFI application for the Secure Boot tests: it paints the text console
; yellow on blue, prints one line, and idles. Signed with Debian's test key it
; runs under the test key's Secure Boot; unsigned, the firmware refuses it.
;   nasm -f win64 efi_banner.asm -o efi_banner.obj
;   ld -m i386pep --subsystem 10 -e efi_main --image-base 0x10000000 -s -o efi_banner.efi efi_banner.obj

bits 64
default rel

CON_OUT        equ 64          ; EFI_SYSTEM_TABLE.ConOut
OUTPUT_STRING  equ 8           ; EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL.OutputString
SET_ATTRIBUTE  equ 40
CLEAR_SCREEN   equ 48
YELLOW_ON_BLUE equ 0x1E        ; EFI_YELLOW | EFI_BACKGROUND_BLUE

section .text
global efi_main
efi_main:
    sub rsp, 40                 ; shadow space, and the stack 16-byte aligned for calls
    mov rbx, [rdx + CON_OUT]    ; rbx survives the calls (callee-saved)

    mov rcx, rbx
    mov rdx, YELLOW_ON_BLUE
    call [rbx + SET_ATTRIBUTE]

    mov rcx, rbx
    call [rbx + CLEAR_SCREEN]

    mov rcx, rbx
    lea rdx, [message]
    call [rbx + OUTPUT_STRING]

.idle:
    hlt
    jmp .idle

section .data
message: dw __utf16__("KVM-VDI EFI TEST: this program ran under Secure Boot"), 13, 10, 0
