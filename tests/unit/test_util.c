/*
 * test_util.c - whiteout and marker rules, inode number mapping, the
 * xattr escaping of the union engine, and the node lock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
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

static void test_redirect_valid(void **state)
{
	static const char *const good[] = {"a", "name.with.dots", "/a", "/a/b/c", "..x", "/.x"};
	static const char *const bad[] = {"",	   "a/b",    ".",     "..", "/",
					  "/a//b", "/a/./b", "/a/..", "/a/"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(ovl_redirect_valid(good[i], strlen(good[i])));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ovl_redirect_valid(bad[i], strlen(bad[i])))
			fail_msg("redirect '%s' accepted", bad[i]);
	}
	assert_false(ovl_redirect_valid("a\0b", 3));
}

static void test_nlink_parse(void **state)
{
	char base;
	long diff;

	(void)state;
	assert_int_equal(ovl_nlink_parse("U+0", 3, &base, &diff), 0);
	assert_int_equal(base, 'U');
	assert_int_equal(diff, 0);
	assert_int_equal(ovl_nlink_parse("L-12", 4, &base, &diff), 0);
	assert_int_equal(base, 'L');
	assert_int_equal(diff, -12);
	assert_int_not_equal(ovl_nlink_parse("X+1", 3, &base, &diff), 0);
	assert_int_not_equal(ovl_nlink_parse("U1", 2, &base, &diff), 0);
	assert_int_not_equal(ovl_nlink_parse("U+1x", 4, &base, &diff), 0);
	assert_int_not_equal(ovl_nlink_parse("U+99999999999999999999", 22, &base, &diff), 0);
}

static void test_fb_check(void **state)
{
	unsigned char fb[64] = {0, 0xfb, 29, 0, 1};

	(void)state;
	assert_int_equal(ovl_fb_check(fb, 29), 8);
	fb[2] = 30;
	assert_int_not_equal(ovl_fb_check(fb, 29), 8);
	fb[2] = 29;
	fb[1] = 0xfa;
	assert_true(ovl_fb_check(fb, 29) < 0);
	assert_true(ovl_fb_check(fb, 10) < 0);
}

/* the node lock: exclusion under contention, and waiters woken */
#define LOCK_THREADS 4
#define LOCK_ROUNDS  200000

struct lock_test {
	struct ovl_lock lock;
	unsigned long count; /* only changed under lock */
	int inside;	     /* threads inside the lock at once */
	int worst;
};

static void *lock_worker(void *arg)
{
	struct lock_test *t = arg;
	int i, in;

	for (i = 0; i < LOCK_ROUNDS; i++) {
		ovl_lock(&t->lock);
		in = ++t->inside;
		if (in > t->worst)
			t->worst = in;
		t->count++;
		if (i % 1000 == 0)
			sched_yield(); /* sleep holding it now and then: others must wait */
		t->inside--;
		ovl_unlock(&t->lock);
	}
	return NULL;
}

static void test_node_lock(void **state)
{
	struct lock_test t;
	pthread_t tid[LOCK_THREADS];
	int i;

	(void)state;
	memset(&t, 0, sizeof(t));
	for (i = 0; i < LOCK_THREADS; i++)
		assert_int_equal(pthread_create(&tid[i], NULL, lock_worker, &t), 0);
	for (i = 0; i < LOCK_THREADS; i++)
		pthread_join(tid[i], NULL);
	assert_int_equal(t.count, (unsigned long)LOCK_THREADS * LOCK_ROUNDS);
	assert_int_equal(t.worst, 1);
	assert_int_equal(atomic_load(&t.lock.v), 0); /* left free */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whiteout),	   cmocka_unit_test(test_markers),
	    cmocka_unit_test(test_map_ino),	   cmocka_unit_test(test_private_xattr),
	    cmocka_unit_test(test_redirect_valid), cmocka_unit_test(test_nlink_parse),
	    cmocka_unit_test(test_fb_check),	   cmocka_unit_test(test_node_lock),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
