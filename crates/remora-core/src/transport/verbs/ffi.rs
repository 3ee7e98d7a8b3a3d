//! The part of libibverbs (rdma-core) the verbs transport uses, loaded at run time so that the
//! addon loads and runs on hosts without rdma-core. Struct layouts and the offsets of the
//! `ibv_context_ops` entries are those of rdma-core's `<infiniband/verbs.h>` (libibverbs 1.x,
//! provider ABI 34, x86-64 / LP64); the compile-time assertions below pin them.
//!
//! `ibv_post_send` and `ibv_poll_cq` are `static inline` in `verbs.h`: they call through
//! `context->ops`, so this module does the same.
//!
//! This file is the raw ABI: constants, layouts, entry points. The owners that make it safe
//! to use (device, memory registration, queue pair) are in `wrappers`, re-exported here.

use crate::error::{Error, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void};
use std::mem::offset_of;
use std::sync::OnceLock;

mod wrappers;

pub use wrappers::{probe, status_text, Device, Endpoint, Mr, Qp, ENDPOINT_BYTES, RD_ATOMIC};

pub const LIBRARY: &str = "libibverbs.so.1";

pub const ACCESS_LOCAL_WRITE: c_int = 1;
pub const ACCESS_REMOTE_WRITE: c_int = 2;
pub const ACCESS_REMOTE_READ: c_int = 4;

pub const WR_RDMA_WRITE: u32 = 0;
pub const WR_RDMA_READ: u32 = 4;
const SEND_SIGNALED: u32 = 2;

const QPT_RC: u32 = 2;
const QPS_INIT: u32 = 1;
const QPS_RTR: u32 = 2;
const QPS_RTS: u32 = 3;

const QP_STATE: c_int = 1;
const QP_ACCESS_FLAGS: c_int = 1 << 3;
const QP_PKEY_INDEX: c_int = 1 << 4;
const QP_PORT: c_int = 1 << 5;
const QP_AV: c_int = 1 << 7;
const QP_PATH_MTU: c_int = 1 << 8;
const QP_TIMEOUT: c_int = 1 << 9;
const QP_RETRY_CNT: c_int = 1 << 10;
const QP_RNR_RETRY: c_int = 1 << 11;
const QP_RQ_PSN: c_int = 1 << 12;
const QP_MAX_QP_RD_ATOMIC: c_int = 1 << 13;
const QP_MIN_RNR_TIMER: c_int = 1 << 15;
const QP_SQ_PSN: c_int = 1 << 16;
const QP_MAX_DEST_RD_ATOMIC: c_int = 1 << 17;
const QP_DEST_QPN: c_int = 1 << 20;

/// `offsetof(struct ibv_context, ops.poll_cq)` and `ops.post_send`.
const OPS_POLL_CQ: usize = 96;
const OPS_POST_SEND: usize = 208;
/// Bytes of `struct ibv_port_attr` that matter here, and where its fields sit.
const PORT_ATTR_BYTES: usize = 256;
const PORT_STATE: usize = 0;
const PORT_ACTIVE_MTU: usize = 8;
const PORT_GID_TBL_LEN: usize = 12;
const PORT_LID: usize = 34;
const PORT_ACTIVE: u32 = 4;

/// `struct ibv_mr`'s key fields: `lkey` at 36, `rkey` at 40.
const MR_LKEY: usize = 36;
const MR_RKEY: usize = 40;

/// `struct ibv_qp`'s `qp_num`.
const QP_NUM: usize = 52;

#[repr(C)]
pub struct Sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

#[repr(C)]
pub struct SendWr {
    pub wr_id: u64,
    pub next: *mut SendWr,
    pub sg_list: *mut Sge,
    pub num_sge: c_int,
    pub opcode: u32,
    pub send_flags: u32,
    pub imm_data: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    _pad: u32,
    /// The rest of the `wr` union, `qp_type` and the `bind_mw`/`tso` union.
    _rest: [u64; 9],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Wc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: u32,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

#[repr(C)]
#[derive(Default)]
struct QpCap {
    max_send_wr: u32,
    max_recv_wr: u32,
    max_send_sge: u32,
    max_recv_sge: u32,
    max_inline_data: u32,
}

#[repr(C)]
struct QpInitAttr {
    qp_context: *mut c_void,
    send_cq: *mut c_void,
    recv_cq: *mut c_void,
    srq: *mut c_void,
    cap: QpCap,
    qp_type: u32,
    sq_sig_all: c_int,
}

#[repr(C, align(8))]
#[derive(Default)]
struct GlobalRoute {
    dgid: [u8; 16],
    flow_label: u32,
    sgid_index: u8,
    hop_limit: u8,
    traffic_class: u8,
}

#[repr(C)]
#[derive(Default)]
struct AhAttr {
    grh: GlobalRoute,
    dlid: u16,
    sl: u8,
    src_path_bits: u8,
    static_rate: u8,
    is_global: u8,
    port_num: u8,
}

#[repr(C)]
#[derive(Default)]
struct QpAttr {
    qp_state: u32,
    cur_qp_state: u32,
    path_mtu: u32,
    path_mig_state: u32,
    qkey: u32,
    rq_psn: u32,
    sq_psn: u32,
    dest_qp_num: u32,
    qp_access_flags: c_int,
    cap: QpCap,
    ah_attr: AhAttr,
    alt_ah_attr: AhAttr,
    pkey_index: u16,
    alt_pkey_index: u16,
    en_sqd_async_notify: u8,
    sq_draining: u8,
    max_rd_atomic: u8,
    max_dest_rd_atomic: u8,
    min_rnr_timer: u8,
    port_num: u8,
    timeout: u8,
    retry_cnt: u8,
    rnr_retry: u8,
    alt_port_num: u8,
    alt_timeout: u8,
    rate_limit: u32,
}

// The layouts of rdma-core's verbs.h (checked there with offsetof on x86-64).
const _: () = {
    assert!(size_of::<Sge>() == 16);
    assert!(size_of::<SendWr>() == 128);
    assert!(offset_of!(SendWr, opcode) == 28);
    assert!(offset_of!(SendWr, remote_addr) == 40);
    assert!(offset_of!(SendWr, rkey) == 48);
    assert!(size_of::<Wc>() == 48);
    assert!(offset_of!(Wc, status) == 8);
    assert!(size_of::<QpInitAttr>() == 64);
    assert!(offset_of!(QpInitAttr, cap) == 32);
    assert!(offset_of!(QpInitAttr, qp_type) == 52);
    assert!(size_of::<GlobalRoute>() == 24);
    assert!(size_of::<AhAttr>() == 32);
    assert!(offset_of!(AhAttr, dlid) == 24);
    assert!(offset_of!(AhAttr, port_num) == 30);
    assert!(size_of::<QpAttr>() == 144);
    assert!(offset_of!(QpAttr, cap) == 36);
    assert!(offset_of!(QpAttr, ah_attr) == 56);
    assert!(offset_of!(QpAttr, pkey_index) == 120);
    assert!(offset_of!(QpAttr, max_rd_atomic) == 126);
    assert!(offset_of!(QpAttr, timeout) == 130);
    assert!(offset_of!(QpAttr, rate_limit) == 136);
};

type PostSend = unsafe extern "C" fn(*mut c_void, *mut SendWr, *mut *mut SendWr) -> c_int;
type PollCq = unsafe extern "C" fn(*mut c_void, c_int, *mut Wc) -> c_int;

/// Entry points of libibverbs. The library stays loaded for the life of the process.
struct Lib {
    get_device_list: unsafe extern "C" fn(*mut c_int) -> *mut *mut c_void,
    free_device_list: unsafe extern "C" fn(*mut *mut c_void),
    get_device_name: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    open_device: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    close_device: unsafe extern "C" fn(*mut c_void) -> c_int,
    alloc_pd: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    dealloc_pd: unsafe extern "C" fn(*mut c_void) -> c_int,
    reg_mr: unsafe extern "C" fn(*mut c_void, *mut c_void, usize, c_int) -> *mut c_void,
    dereg_mr: unsafe extern "C" fn(*mut c_void) -> c_int,
    create_cq:
        unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *mut c_void, c_int) -> *mut c_void,
    destroy_cq: unsafe extern "C" fn(*mut c_void) -> c_int,
    create_qp: unsafe extern "C" fn(*mut c_void, *mut QpInitAttr) -> *mut c_void,
    modify_qp: unsafe extern "C" fn(*mut c_void, *mut QpAttr, c_int) -> c_int,
    destroy_qp: unsafe extern "C" fn(*mut c_void) -> c_int,
    query_port: unsafe extern "C" fn(*mut c_void, u8, *mut u8) -> c_int,
    query_gid: unsafe extern "C" fn(*mut c_void, u8, c_int, *mut [u8; 16]) -> c_int,
    wc_status_str: unsafe extern "C" fn(u32) -> *const c_char,
    _lib: Library,
}

fn load() -> std::result::Result<Lib, String> {
    // SAFETY: loading libibverbs runs its initialisers, which only read its provider
    // configuration; it is the library these declarations describe.
    let lib = unsafe { Library::new(LIBRARY) }.map_err(|_| format!("{LIBRARY} not found"))?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol is the libibverbs function of that name, whose C prototype
            // the field's type transcribes; the library is kept loaded alongside the pointer.
            *unsafe { lib.get($name) }.map_err(|e| format!("{LIBRARY} lacks a symbol: {e}"))?
        };
    }
    Ok(Lib {
        get_device_list: sym!(b"ibv_get_device_list\0"),
        free_device_list: sym!(b"ibv_free_device_list\0"),
        get_device_name: sym!(b"ibv_get_device_name\0"),
        open_device: sym!(b"ibv_open_device\0"),
        close_device: sym!(b"ibv_close_device\0"),
        alloc_pd: sym!(b"ibv_alloc_pd\0"),
        dealloc_pd: sym!(b"ibv_dealloc_pd\0"),
        reg_mr: sym!(b"ibv_reg_mr\0"),
        dereg_mr: sym!(b"ibv_dereg_mr\0"),
        create_cq: sym!(b"ibv_create_cq\0"),
        destroy_cq: sym!(b"ibv_destroy_cq\0"),
        create_qp: sym!(b"ibv_create_qp\0"),
        modify_qp: sym!(b"ibv_modify_qp\0"),
        destroy_qp: sym!(b"ibv_destroy_qp\0"),
        query_port: sym!(b"ibv_query_port\0"),
        query_gid: sym!(b"ibv_query_gid\0"),
        wc_status_str: sym!(b"ibv_wc_status_str\0"),
        _lib: lib,
    })
}

fn lib() -> Result<&'static Lib> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load)
        .as_ref()
        .map_err(|e| Error::NoRdma(e.clone()))
}
