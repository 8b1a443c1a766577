/*
 * fuzz_params.c - libFuzzer target: the mount option parser (option string
 * splitting, lowerdir escapes and "::", values, the cross-option rules).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/ovl/ovl.h"

static int other(void *ctx, const char *key, const char *val, char *err, size_t errlen)
{
	(void)ctx;
	(void)val;
	(void)err;
	(void)errlen;
	return strcmp(key, "ro") == 0 ? 0 : -22;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ovl_config cfg;
	char err[512], *opts = malloc(size + 1);

	if (!opts)
		return 0;
	memcpy(opts, data, size);
	opts[size] = '\0';
	ovl_config_init(&cfg);
	err[0] = '\0';
	if (ovl_params_parse(&cfg, opts, other, NULL, err, sizeof(err)) == 0)
		ovl_params_verify(&cfg, err, sizeof(err));
	/* a message is one line */
	if (strchr(err, '\n'))
		abort();
	ovl_config_free(&cfg);
	free(opts);
	return 0;
}
