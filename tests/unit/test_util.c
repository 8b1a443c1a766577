/*
 * test_util.c - whiteout and marker rules, inode number mapping, and the
 * xattr escaping of the union engine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "../../src/ovl/ovl.h"

static void test_whiteout(void **state)
{
	struct stat st;

	(void)state;
	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFCHR;
	st.st_rdev = makedev(0, 0);
	assert_true(ovl_is_whiteout(&st));
	st.st_rdev = makedev(1, 3);
	assert_false(ovl_is_whiteout(&st));
	st.st_mode = S_IFREG;
	st.st_rdev = 0;
	assert_false(ovl_is_whiteout(&st));
	st.st_mode = S_IFBLK;
	assert_false(ovl_is_whiteout(&st));
}

static void test_markers(void **state)
{
	(void)state;
	assert_true(ovl_is_wh_marker(".wh.foo"));
	assert_true(ovl_is_wh_marker(".wh..wh..opq"));
	assert_false(ovl_is_wh_marker(".whfoo"));
	assert_false(ovl_is_wh_marker("foo.wh.bar"));
}

static void test_map_ino(void **state)
{
	struct ovl_layer layers[3];
	struct ovl_fs fs;

	(void)state;
	memset(&fs, 0, sizeof(fs));
	memset(layers, 0, sizeof(layers));
	fs.layers = layers;
	fs.nlayers = 3;
	fs.samefs = true;
	assert_int_equal(ovl_map_ino(&fs, 2, 1234), 1234);
	fs.samefs = false;
	fs.xino_bits = 2;
	layers[0].fsid = 0;
	layers[1].fsid = 1;
	layers[2].fsid = 2;
	assert_int_equal(ovl_map_ino(&fs, 0, 1234), 1234);
	assert_int_equal(ovl_map_ino(&fs, 1, 1234), 1234 | (1ULL << 62));
	assert_int_equal(ovl_map_ino(&fs, 2, 1234), 1234 | (2ULL << 62));
	/* too large to carry the fsid: the real number is kept */
	assert_int_equal(ovl_map_ino(&fs, 2, 1ULL << 62), 1ULL << 62);
}

static void test_private_xattr(void **state)
{
	struct ovl_fs fs;

	(void)state;
	memset(&fs, 0, sizeof(fs));
	strcpy(fs.xprefix, "trusted.overlay.");
	fs.xprefix_len = strlen(fs.xprefix);
	assert_true(ovl_is_private_xattr(&fs, "trusted.overlay.opaque"));
	assert_true(ovl_is_private_xattr(&fs, "trusted.overlay.overlay.x"));
	assert_false(ovl_is_private_xattr(&fs, "user.overlay.opaque"));
	assert_false(ovl_is_private_xattr(&fs, "trusted.overlayfoo"));
	strcpy(fs.xprefix, "user.overlay.");
	fs.xprefix_len = strlen(fs.xprefix);
	assert_true(ovl_is_private_xattr(&fs, "user.overlay.redirect"));
	assert_false(ovl_is_private_xattr(&fs, "trusted.overlay.redirect"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whiteout),
	    cmocka_unit_test(test_markers),
	    cmocka_unit_test(test_map_ino),
	    cmocka_unit_test(test_private_xattr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
