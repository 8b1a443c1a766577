/*
 * params.c - mount options with the kernel overlayfs syntax and rules:
 * comma splitting with "\," escapes, lowerdir splitting with "\:" escapes
 * and "::" data-only layers, and the cross-option checks of
 * ovl_fs_params_verify().  Messages are one line, no trailing newline.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

void ovl_config_init(struct ovl_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->redirect_dir = OVL_REDIRECT_ON;
	cfg->index = OVL_UNSET;
	cfg->metacopy = OVL_UNSET;
	cfg->nfs_export = OVL_UNSET;
	cfg->xino = OVL_XINO_AUTO;
}

static void free_lowerdirs(struct ovl_config *cfg)
{
	int i;

	for (i = 0; i < cfg->nlower + cfg->ndata; i++)
		free(cfg->lowerdirs[i]);
	free(cfg->lowerdirs);
	cfg->lowerdirs = NULL;
	cfg->nlower = 0;
	cfg->ndata = 0;
}

void ovl_config_free(struct ovl_config *cfg)
{
	free_lowerdirs(cfg);
	free(cfg->upperdir);
	free(cfg->workdir);
	cfg->upperdir = NULL;
	cfg->workdir = NULL;
}

/* Remove one level of backslash escapes in place. */
void ovl_unescape(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (*s == '\\' && s[1])
			s++;
		*d++ = *s;
	}
	*d = '\0';
}

static int add_lower(struct ovl_config *cfg, const char *start, size_t len, bool data, char *err,
		     size_t errlen)
{
	int n = cfg->nlower + cfg->ndata;
	char **v;
	char *p;

	if (len == 0)
		return fail(err, errlen, -EINVAL, "empty layer in '%s'",
			    cfg->lowerdir_all ? "lowerdir"
			    : data	      ? "datadir+"
					      : "lowerdir+");
	if (n >= OVL_MAX_STACK)
		return fail(err, errlen, -EINVAL, "too many lower layers, limit is %d",
			    OVL_MAX_STACK);
	if (!data && cfg->ndata)
		return fail(err, errlen, -EINVAL,
			    "regular lower layers cannot follow data-only layers");
	v = realloc(cfg->lowerdirs, sizeof(*v) * (size_t)(n + 1));
	if (!v)
		return -ENOMEM;
	cfg->lowerdirs = v;
	p = strndup(start, len);
	if (!p)
		return -ENOMEM;
	ovl_unescape(p);
	v[n] = p;
	if (data)
		cfg->ndata++;
	else
		cfg->nlower++;
	return 0;
}

/*
 * lowerdir=a:b::c:d  gives regular layers a, b and data-only layers c, d.
 * A backslash escapes the next character; ":::" and trailing colons are
 * refused like the kernel does.
 */
int ovl_parse_lowerdirs(struct ovl_config *cfg, const char *val, char *err, size_t errlen)
{
	const char *s = val, *start = val;
	bool data = false, next_data;
	int ret;

	free_lowerdirs(cfg);
	cfg->lowerdir_all = true;
	if (!*val)
		return fail(err, errlen, -EINVAL, "empty 'lowerdir'");
	for (;; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s != ':' && *s != '\0')
			continue;
		next_data = false;
		if (*s == ':' && s[1] == ':') {
			if (s[2] == ':')
				return fail(err, errlen, -EINVAL,
					    "only single ':' or double '::' sequences of unescaped "
					    "':' are allowed in 'lowerdir'");
			next_data = true;
		}
		if (*s == ':' && (s[1] == '\0' || (next_data && s[2] == '\0')))
			return fail(err, errlen, -EINVAL,
				    "unescaped trailing colons in 'lowerdir'");
		ret = add_lower(cfg, start, (size_t)(s - start), data, err, errlen);
		if (ret)
			return ret;
		if (*s == '\0')
			break;
		if (next_data) {
			if (data)
				return fail(err, errlen, -EINVAL,
					    "only one '::' separator is allowed in 'lowerdir'");
			data = true;
			s++;
		}
		start = s + 1;
	}
	if (cfg->nlower == 0)
		return fail(err, errlen, -EINVAL, "data-only layers need a regular lower layer");
	return 0;
}

static int parse_onoff(const char *key, const char *val, int *out, char *err, size_t errlen)
{
	if (val && !strcmp(val, "on"))
		*out = OVL_ON;
	else if (val && !strcmp(val, "off"))
		*out = OVL_OFF;
	else
		return fail(err, errlen, -EINVAL, "bad value for '%s': '%s' (use on or off)", key,
			    val ? val : "");
	return 0;
}

static int set_path(char **dst, const char *key, const char *val, char *err, size_t errlen)
{
	if (!val || !*val)
		return fail(err, errlen, -EINVAL, "empty '%s'", key);
	free(*dst);
	*dst = strdup(val);
	if (!*dst)
		return -ENOMEM;
	ovl_unescape(*dst);
	return 0;
}

static int parse_redirect(struct ovl_config *cfg, const char *val, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		enum ovl_redirect_mode mode;
	} modes[] = {
	    {"on", OVL_REDIRECT_ON},
	    {"follow", OVL_REDIRECT_FOLLOW},
	    {"off", OVL_REDIRECT_OFF},
	    {"nofollow", OVL_REDIRECT_NOFOLLOW},
	};
	size_t i;

	for (i = 0; val && i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (!strcmp(val, modes[i].name)) {
			cfg->redirect_dir = modes[i].mode;
			cfg->redirect_set = true;
			return 0;
		}
	}
	return fail(err, errlen, -EINVAL,
		    "bad value for 'redirect_dir': '%s' (use on, follow, off or nofollow)",
		    val ? val : "");
}

static int parse_choice(const char *key, const char *val, const char *const *choices, char *err,
			size_t errlen)
{
	int i;

	for (i = 0; val && choices[i]; i++) {
		if (!strcmp(val, choices[i]))
			return i;
	}
	return fail(err, errlen, -EINVAL, "bad value for '%s': '%s'", key, val ? val : "");
}

static int no_value(const char *key, const char *val, char *err, size_t errlen)
{
	if (val)
		return fail(err, errlen, -EINVAL, "option '%s' takes no value", key);
	return 0;
}

/*
 * lowerdir+=DIR and datadir+=DIR (the kernel's new mount API options): one
 * layer each, appended; no ':' splitting, so a path may hold colons.  They
 * cannot follow lowerdir=, and regular layers cannot follow data-only ones.
 */
static int add_layer(struct ovl_config *cfg, const char *key, const char *val, char *err,
		     size_t errlen)
{
	if (cfg->lowerdir_all)
		return fail(err, errlen, -EINVAL, "lowerdir+ and datadir+ cannot follow lowerdir");
	if (!val)
		return fail(err, errlen, -EINVAL, "empty '%s'", key);
	return add_lower(cfg, val, strlen(val), key[0] == 'd', err, errlen);
}

int ovl_parse_param(struct ovl_config *cfg, const char *key, const char *val, char *err,
		    size_t errlen)
{
	static const char *const xino[] = {"off", "auto", "on", NULL};
	static const char *const uuid[] = {"off", "null", "auto", "on", NULL};
	static const char *const verity[] = {"off", "on", "require", NULL};
	int ret;

	if (!strcmp(key, "lowerdir")) {
		if (!val)
			return fail(err, errlen, -EINVAL, "empty 'lowerdir'");
		return ovl_parse_lowerdirs(cfg, val, err, errlen);
	}
	if (!strcmp(key, "lowerdir+") || !strcmp(key, "datadir+"))
		return add_layer(cfg, key, val, err, errlen);
	if (!strcmp(key, "upperdir"))
		return set_path(&cfg->upperdir, key, val, err, errlen);
	if (!strcmp(key, "workdir"))
		return set_path(&cfg->workdir, key, val, err, errlen);
	if (!strcmp(key, "redirect_dir"))
		return parse_redirect(cfg, val, err, errlen);
	if (!strcmp(key, "index"))
		return parse_onoff(key, val, &cfg->index, err, errlen);
	if (!strcmp(key, "metacopy"))
		return parse_onoff(key, val, &cfg->metacopy, err, errlen);
	if (!strcmp(key, "nfs_export"))
		return parse_onoff(key, val, &cfg->nfs_export, err, errlen);
	if (!strcmp(key, "xino")) {
		ret = parse_choice(key, val, xino, err, errlen);
		if (ret >= 0)
			cfg->xino = (enum ovl_xino_mode)ret;
		return ret < 0 ? ret : 0;
	}
	if (!strcmp(key, "uuid"))
		return parse_choice(key, val, uuid, err, errlen) < 0 ? -EINVAL : 0;
	if (!strcmp(key, "verity"))
		return parse_choice(key, val, verity, err, errlen) < 0 ? -EINVAL : 0;
	if (!strcmp(key, "fsync")) {
		static const char *const modes[] = {"auto", "strict", "volatile", NULL};

		ret = parse_choice(key, val, modes, err, errlen);
		if (ret >= 0)
			cfg->fsync = (enum ovl_fsync_mode)ret;
		return ret < 0 ? ret : 0;
	}
	if (!strcmp(key, "userxattr")) {
		cfg->userxattr = true;
		return no_value(key, val, err, errlen);
	}
	if (!strcmp(key, "volatile")) {
		cfg->ovl_volatile = true;
		return no_value(key, val, err, errlen);
	}
	return -ENOENT;
}

static const char *redirect_name(enum ovl_redirect_mode m)
{
	switch (m) {
	case OVL_REDIRECT_ON:
		return "on";
	case OVL_REDIRECT_FOLLOW:
		return "follow";
	case OVL_REDIRECT_NOFOLLOW:
		return "nofollow";
	default:
		return "off";
	}
}

/* The kernel's ovl_fs_params_verify(), for the options strata implements. */
int ovl_params_verify(struct ovl_config *cfg, char *err, size_t errlen)
{
	bool upper = cfg->upperdir != NULL;

	if (cfg->nlower == 0 && cfg->ndata > 0)
		return fail(err, errlen, -EINVAL, "data-only layers need a regular lower layer");
	if (cfg->nlower == 0 && !upper)
		return fail(err, errlen, -EINVAL, "missing 'lowerdir'");
	if (!upper && cfg->nlower == 1)
		return fail(err, errlen, -EINVAL,
			    "at least 2 lowerdir are needed while upperdir nonexistent");
	if (upper && !cfg->workdir)
		return fail(err, errlen, -EINVAL, "missing 'workdir'");
	if (cfg->nlower + cfg->ndata > OVL_MAX_STACK)
		return fail(err, errlen, -EINVAL, "too many lower layers, limit is %d",
			    OVL_MAX_STACK);
	if (cfg->fsync == OVL_FSYNC_VOLATILE)
		cfg->ovl_volatile = true;
	if (!upper && cfg->ovl_volatile)
		return fail(err, errlen, -EINVAL, "option 'volatile' requires an upper layer");
	if (cfg->userxattr) {
		if (cfg->redirect_set && cfg->redirect_dir != OVL_REDIRECT_NOFOLLOW)
			return fail(err, errlen, -EINVAL,
				    "conflicting options: userxattr,redirect_dir=%s",
				    redirect_name(cfg->redirect_dir));
		if (cfg->metacopy == OVL_ON)
			return fail(err, errlen, -EINVAL,
				    "conflicting options: userxattr,metacopy=on");
		/* userxattr: redirects are untrusted, neither created nor followed */
		cfg->redirect_dir = OVL_REDIRECT_NOFOLLOW;
	}
	if (cfg->metacopy == OVL_ON && cfg->redirect_dir != OVL_REDIRECT_ON) {
		if (cfg->redirect_set)
			return fail(err, errlen, -EINVAL,
				    "conflicting options: metacopy=on,redirect_dir=%s",
				    redirect_name(cfg->redirect_dir));
		cfg->redirect_dir = OVL_REDIRECT_ON;
	}
	/* without an upper layer nothing is created: "on" means follow */
	if (!upper && cfg->redirect_dir == OVL_REDIRECT_ON)
		cfg->redirect_dir = OVL_REDIRECT_FOLLOW;
	if (cfg->nfs_export == OVL_ON && cfg->index == OVL_OFF)
		return fail(err, errlen, -EINVAL, "conflicting options: nfs_export=on,index=off");
	if (cfg->nfs_export == OVL_ON)
		cfg->index = OVL_ON;
	if (cfg->index == OVL_UNSET)
		cfg->index = upper ? OVL_ON : OVL_OFF;
	if (cfg->metacopy == OVL_UNSET)
		cfg->metacopy = OVL_OFF;
	if (cfg->nfs_export == OVL_UNSET)
		cfg->nfs_export = OVL_OFF;
	return 0;
}

/* A message quotes user input: keep it to one printable line. */
static void one_line(char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
	}
}

/* Take the next comma-separated option; backslash-escaped commas stay. */
static char *next_opt(char **sp)
{
	char *s = *sp, *start = s;

	if (!s)
		return NULL;
	for (; *s; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s == ',') {
			*s = '\0';
			*sp = s + 1;
			return start;
		}
	}
	*sp = NULL;
	return start;
}

int ovl_params_parse(struct ovl_config *cfg, const char *opts, ovl_other_opt_fn other, void *ctx,
		     char *err, size_t errlen)
{
	char *copy = strdup(opts ? opts : ""), *rest = copy, *opt, *eq, *val;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	while ((opt = next_opt(&rest))) {
		if (!*opt)
			continue;
		eq = strchr(opt, '=');
		val = NULL;
		if (eq) {
			*eq = '\0';
			val = eq + 1;
		}
		ret = ovl_parse_param(cfg, opt, val, err, errlen);
		if (ret == -ENOENT) {
			ret = other ? other(ctx, opt, val, err, errlen) : -EINVAL;
			if (ret == -EINVAL && !*err)
				snprintf(err, errlen, "unknown option '%s'", opt);
		}
		if (ret)
			break;
	}
	free(copy);
	if (ret)
		one_line(err);
	return ret;
}
