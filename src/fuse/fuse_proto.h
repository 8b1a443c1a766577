/*
 * fuse_proto.h - the FUSE kernel protocol, up to 7.41.
 *
 * Debian 12 ships <linux/fuse.h> at protocol 7.38.  This header includes it
 * and adds what later kernels defined that strata negotiates: passthrough
 * (7.40), the resend and idmap flags, and the larger init/open replies.
 * Only the wire layer (src/fuse/) includes this file.
 */
#ifndef STRATA_FUSE_PROTO_H
#define STRATA_FUSE_PROTO_H

#include <linux/fuse.h>
#include <stdint.h>
#include <sys/ioctl.h>

/* the protocol version strata speaks */
#define FW_KERNEL_VERSION	7
#define FW_KERNEL_MINOR_VERSION 41

/* 7.39 */
#ifndef FUSE_DIRECT_IO_ALLOW_MMAP
#define FUSE_DIRECT_IO_ALLOW_MMAP (1ULL << 36)
#endif
/* 7.40 */
#ifndef FUSE_PASSTHROUGH
#define FUSE_PASSTHROUGH (1ULL << 37)
#endif
#ifndef FUSE_NO_EXPORT_SUPPORT
#define FUSE_NO_EXPORT_SUPPORT (1ULL << 38)
#endif
#ifndef FUSE_HAS_RESEND
#define FUSE_HAS_RESEND (1ULL << 39)
#endif
/* 7.41 */
#ifndef FUSE_ALLOW_IDMAP
#define FUSE_ALLOW_IDMAP (1ULL << 40)
#endif
/* 7.42: negotiated only through the io_uring transport */
#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING (1ULL << 41)
#endif

/*
 * FUSE over io_uring (7.42, include/uapi/linux/fuse.h): each ring entry is
 * a header buffer (struct fw_uring_req_header) and a payload buffer; the
 * daemon sends IORING_OP_URING_CMD with one of these commands and struct
 * fw_uring_cmd_req in the SQE's command area (IORING_SETUP_SQE128).
 */
#define FW_URING_IN_OUT_HEADER_SZ 128
#define FW_URING_OP_IN_OUT_SZ	  128
#define FW_URING_CMD_REGISTER	  1
#define FW_URING_CMD_COMMIT_FETCH 2

struct fw_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id; /* the request's unique */
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct fw_uring_req_header {
	char in_out[FW_URING_IN_OUT_HEADER_SZ]; /* fuse_in_header / fuse_out_header */
	char op_in[FW_URING_OP_IN_OUT_SZ];	/* the request's first argument */
	struct fw_uring_ent_in_out ring_ent_in_out;
};

struct fw_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH (1 << 7)
#endif

#ifndef FUSE_INT_REQ_BIT
#define FUSE_INT_REQ_BIT (1ULL << 0)
#endif

/* opcodes newer than the installed header */
#define FW_OP_STATX 52
#define FW_OP_MAX   64

/* struct fuse_init_out as of 7.40: unused[0] became max_stack_depth */
struct fw_init_out {
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint16_t max_background;
	uint16_t congestion_threshold;
	uint32_t max_write;
	uint32_t time_gran;
	uint16_t max_pages;
	uint16_t map_alignment;
	uint32_t flags2;
	uint32_t max_stack_depth;
	uint32_t unused[6];
};

/* struct fuse_open_out as of 7.40: padding became backing_id */
struct fw_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

/* FUSE_DEV_IOC_BACKING_OPEN argument (7.40) */
struct fw_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};

#ifndef FUSE_DEV_IOC_MAGIC
#define FUSE_DEV_IOC_MAGIC 229
#endif
#ifndef FUSE_DEV_IOC_CLONE
#define FUSE_DEV_IOC_CLONE _IOR(FUSE_DEV_IOC_MAGIC, 0, uint32_t)
#endif
#ifndef FUSE_DEV_IOC_BACKING_OPEN
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(FUSE_DEV_IOC_MAGIC, 1, struct fw_backing_map)
#endif
#ifndef FUSE_DEV_IOC_BACKING_CLOSE
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#endif

#endif
