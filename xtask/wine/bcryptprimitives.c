/*
 * bcryptprimitives.dll for Wine 8, which lacks it. Rust's standard library (1.78 and later)
 * imports ProcessPrng from this DLL on Windows for its random numbers (HashMap seeds and the
 * like), so without it no Rust program starts under Wine 8. This shim is built by
 * `cargo xtask test` with mingw-w64 and copied into the test Wine prefix only; it never ships.
 *
 * ProcessPrng is documented as "always succeeds, returns TRUE". RtlGenRandom
 * (advapi32!SystemFunction036) is the long-standing OS RNG that Wine implements.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
