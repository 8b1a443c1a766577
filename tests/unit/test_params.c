/*
 * test_params.c - the mount option parser: table-driven cases that must
 * work and must not, checked against the kernel's rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../../src/ovl/ovl.h"

static int parse(const char *opts, struct ovl_config *cfg, char *err, size_t errlen)
{
	int ret;

	ovl_config_init(cfg);
	err[0] = '\0';
	ret = ovl_params_parse(cfg, opts, NULL, NULL, err, errlen);
	if (!ret)
		ret = ovl_params_verify(cfg, err, errlen);
	return ret;
}

static void test_lowerdirs_split(void **state)
{
	struct ovl_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(parse("lowerdir=/a:/b:/c", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.nlower, 3);
	assert_int_equal(cfg.ndata, 0);
	assert_string_equal(cfg.lowerdirs[0], "/a");
	assert_string_equal(cfg.lowerdirs[2], "/c");
	ovl_config_free(&cfg);
}

static void test_lowerdirs_escapes(void **state)
{
	struct ovl_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(parse("lowerdir=/a\\:b:/c\\,d,index=off", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.nlower, 2);
	assert_string_equal(cfg.lowerdirs[0], "/a:b");
	assert_string_equal(cfg.lowerdirs[1], "/c,d");
	ovl_config_free(&cfg);
}

static void test_data_only(void **state)
{
	struct ovl_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(parse("lowerdir=/a:/b::/d1:/d2", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.nlower, 2);
	assert_int_equal(cfg.ndata, 2);
	assert_string_equal(cfg.lowerdirs[2], "/d1");
	ovl_config_free(&cfg);
}

static void test_plus_layers(void **state)
{
	struct ovl_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(parse("lowerdir+=/a:b,lowerdir+=/c\\,d,datadir+=/d1,datadir+=/d2", &cfg,
			       err, sizeof(err)),
			 0);
	assert_int_equal(cfg.nlower, 2);
	assert_int_equal(cfg.ndata, 2);
	assert_string_equal(cfg.lowerdirs[0], "/a:b");
	assert_string_equal(cfg.lowerdirs[1], "/c,d");
	assert_string_equal(cfg.lowerdirs[3], "/d2");
	ovl_config_free(&cfg);
	/* lowerdir= after lowerdir+= replaces them, as in the kernel */
	assert_int_equal(parse("lowerdir+=/x,lowerdir=/a:/b", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.nlower, 2);
	assert_string_equal(cfg.lowerdirs[0], "/a");
	ovl_config_free(&cfg);
}

static void test_must_fail(void **state)
{
	static const struct {
		const char *opts;
		const char *msg; /* expected substring of the message */
	} cases[] = {
	    {"lowerdir=", "empty"},
	    {"lowerdir=:/a", "empty layer"},
	    {"lowerdir=/a:", "trailing"},
	    {"lowerdir=/a:::/b", "'::'"},
	    {"lowerdir=/a", "at least 2 lowerdir"},
	    {"index=on", "missing 'lowerdir'"},
	    {"lowerdir=/a:/b,upperdir=/u", "missing 'workdir'"},
	    {"lowerdir=/a:/b,redirect_dir=maybe", "redirect_dir"},
	    {"lowerdir=/a:/b,index=yes", "index"},
	    {"lowerdir=/a:/b,bogus=1", "unknown option 'bogus'"},
	    {"lowerdir=/a:/b,upperdir=/u,workdir=/w,metacopy=on,redirect_dir=off",
	     "conflicting options"},
	    {"lowerdir=/a:/b,userxattr,redirect_dir=on", "conflicting options"},
	    {"lowerdir=/a:/b,userxattr,metacopy=on", "conflicting options"},
	    {"lowerdir=/a:/b,upperdir=/u,workdir=/w,nfs_export=on,index=off",
	     "conflicting options"},
	    {"lowerdir=/a:/b,volatile", "volatile"},
	    {"lowerdir=/a:/b,userxattr=1", "takes no value"},
	    {"lowerdir=/a:/b,lowerdir+=/c", "cannot follow lowerdir"},
	    {"lowerdir+=/a,datadir+=/d,lowerdir+=/b", "cannot follow data-only"},
	    {"datadir+=/d,upperdir=/u,workdir=/w", "need a regular lower layer"},
	    {"lowerdir+=,lowerdir+=/a", "empty layer in 'lowerdir+'"},
	};
	struct ovl_config cfg;
	char err[256];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = parse(cases[i].opts, &cfg, err, sizeof(err));

		if (ret == 0 || !strstr(err, cases[i].msg))
			fail_msg("'%s': ret %d, message '%s'", cases[i].opts, ret, err);
		assert_null(strchr(err, '\n'));
		ovl_config_free(&cfg);
	}
}

static void test_too_many_layers(void **state)
{
	char opts[501 * 4 + 16], err[256];
	struct ovl_config cfg;
	size_t len;
	int i;

	(void)state;
	len = (size_t)snprintf(opts, sizeof(opts), "lowerdir=");
	for (i = 0; i < 501; i++)
		len += (size_t)snprintf(opts + len, sizeof(opts) - len, "%s/l", i ? ":" : "");
	assert_int_not_equal(parse(opts, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "too many lower layers"));
	ovl_config_free(&cfg);
}

static void test_defaults(void **state)
{
	struct ovl_config cfg;
	char err[256];

	(void)state;
	assert_int_equal(parse("lowerdir=/a:/b", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.redirect_dir, OVL_REDIRECT_FOLLOW);
	assert_int_equal(cfg.index, OVL_OFF);
	ovl_config_free(&cfg);
	assert_int_equal(parse("lowerdir=/a,upperdir=/u,workdir=/w", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.redirect_dir, OVL_REDIRECT_ON);
	assert_int_equal(cfg.index, OVL_ON);
	ovl_config_free(&cfg);
	assert_int_equal(parse("lowerdir=/a:/b,userxattr", &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.redirect_dir, OVL_REDIRECT_NOFOLLOW);
	ovl_config_free(&cfg);
}

static void test_unescape(void **state)
{
	char s[] = "a\\:b\\\\c\\";

	(void)state;
	ovl_unescape(s);
	assert_string_equal(s, "a:b\\c\\");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lowerdirs_split), cmocka_unit_test(test_lowerdirs_escapes),
	    cmocka_unit_test(test_data_only),	    cmocka_unit_test(test_plus_layers),
	    cmocka_unit_test(test_must_fail),	    cmocka_unit_test(test_too_many_layers),
	    cmocka_unit_test(test_defaults),	    cmocka_unit_test(test_unescape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
