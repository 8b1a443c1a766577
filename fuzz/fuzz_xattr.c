/*
 * fuzz_xattr.c - libFuzzer target: the overlay xattr formats strata reads
 * from layers: overlay.origin/upper (struct ovl_fb), overlay.redirect,
 * overlay.nlink.  The first byte picks the parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/ovl/ovl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char base;
	long diff;
	int n;

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		n = ovl_fb_check(data + 1, size - 1);
		if (n >= 0 && (size_t)n + 21 != size - 1)
			abort();
		break;
	case 1:
		if (ovl_redirect_valid((const char *)data + 1, size - 1) &&
		    (size - 1 > 256 || memchr(data + 1, 0, size - 1)))
			abort();
		break;
	default:
		if (ovl_nlink_parse((const char *)data + 1, size - 1, &base, &diff) == 0 &&
		    base != 'U' && base != 'L')
			abort();
		break;
	}
	return 0;
}
