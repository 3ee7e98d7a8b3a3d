//! Safe owners of libibverbs objects over the raw ABI of `ffi`: a [`Device`] (context, port,
//! protection domain), memory registrations ([`Mr`]) and reliable-connection queue pairs
//! ([`Qp`]). Each frees its handles in `Drop`, after everything that depends on them.

use super::{
    lib, AhAttr, GlobalRoute, Lib, PollCq, PostSend, QpAttr, QpCap, QpInitAttr, SendWr, Sge, Wc,
    LIBRARY, MR_LKEY, MR_RKEY, OPS_POLL_CQ, OPS_POST_SEND, PORT_ACTIVE, PORT_ACTIVE_MTU,
    PORT_ATTR_BYTES, PORT_GID_TBL_LEN, PORT_LID, PORT_STATE, QPS_INIT, QPS_RTR, QPS_RTS, QPT_RC,
    QP_ACCESS_FLAGS, QP_AV, QP_DEST_QPN, QP_MAX_DEST_RD_ATOMIC, QP_MAX_QP_RD_ATOMIC,
    QP_MIN_RNR_TIMER, QP_NUM, QP_PATH_MTU, QP_PKEY_INDEX, QP_PORT, QP_RETRY_CNT, QP_RNR_RETRY,
    QP_RQ_PSN, QP_SQ_PSN, QP_STATE, QP_TIMEOUT, SEND_SIGNALED,
};
use crate::error::{Error, Result};
use std::ffi::{c_int, c_void, CStr};
use std::sync::Arc;

/// RDMA READs (and atomics) one queue pair may have outstanding, as initiator and target.
pub const RD_ATOMIC: u8 = 16;
/// Local ACK timeout exponent: 4.096 µs · 2^14 ≈ 67 ms, retried `RETRY_COUNT` times, so a
/// dead peer surfaces as a failed completion in about half a second.
const ACK_TIMEOUT: u8 = 14;
const RETRY_COUNT: u8 = 7;

fn os_error(what: &str) -> Error {
    Error::Verbs(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// A work completion's status, in words.
pub fn status_text(status: u32) -> String {
    let Ok(lib) = lib() else {
        return format!("status {status}");
    };
    // SAFETY: `ibv_wc_status_str` returns a static string for any value.
    let s = unsafe { (lib.wc_status_str)(status) };
    if s.is_null() {
        return format!("status {status}");
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// What one side of a reliable connection tells the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: [u8; 16],
    /// `enum ibv_mtu` of the sender's port.
    pub mtu: u8,
}

pub const ENDPOINT_BYTES: usize = 4 + 4 + 2 + 16 + 1;

impl Endpoint {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.qpn.to_le_bytes());
        out.extend_from_slice(&self.psn.to_le_bytes());
        out.extend_from_slice(&self.lid.to_le_bytes());
        out.extend_from_slice(&self.gid);
        out.push(self.mtu);
    }

    pub fn decode(c: &mut crate::control::Cursor) -> Result<Self> {
        let (qpn, psn, lid) = (c.u32()?, c.u32()?, c.u16()?);
        let mut gid = [0u8; 16];
        gid.copy_from_slice(c.take(16)?);
        Ok(Endpoint {
            qpn,
            psn: psn & 0xff_ffff,
            lid,
            gid,
            mtu: c.u8()?,
        })
    }
}

/// An opened RDMA device, its port and a protection domain everything here lives in.
pub struct Device {
    lib: &'static Lib,
    ctx: *mut c_void,
    pd: *mut c_void,
    pub name: String,
    pub port: u8,
    pub gid_index: u8,
    pub gid: [u8; 16],
    pub lid: u16,
    pub mtu: u8,
}

// SAFETY: libibverbs objects may be used from any thread (the library locks internally where
// it must); `ctx` and `pd` are only freed by `Drop`, after every `Mr` and `Qp` holding an
// `Arc<Device>` is gone.
unsafe impl Send for Device {}
// SAFETY: as above; `&Device` only passes the handles to thread-safe verbs calls.
unsafe impl Sync for Device {}

fn env_u8(name: &str) -> Option<u8> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Device {
    /// Opens the device named by `REMORA_VERBS_DEVICE`, or the first one, on port
    /// `REMORA_VERBS_PORT` (default 1), with GID index `REMORA_VERBS_GID_INDEX` (default: the
    /// first IPv4-mapped GID, which is RoCE v2 over IPv4 on rxe and common NICs).
    pub fn open() -> Result<Arc<Device>> {
        let lib = lib()?;
        let wanted = std::env::var("REMORA_VERBS_DEVICE").ok();
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { (lib.get_device_list)(&mut n) };
        if list.is_null() {
            let e = std::io::Error::last_os_error();
            return Err(Error::NoRdma(match e.raw_os_error() {
                // ENOSYS: no InfiniBand subsystem in the kernel.
                Some(38) => {
                    format!("{LIBRARY} is present but the kernel has no RDMA support")
                }
                _ => format!("{LIBRARY} could not list devices: {e}"),
            }));
        }
        let mut chosen = None;
        let mut names = Vec::new();
        for i in 0..usize::try_from(n).unwrap_or(0) {
            // SAFETY: the list holds `n` device pointers.
            let dev = unsafe { *list.add(i) };
            // SAFETY: `dev` is a listed device.
            let raw = unsafe { (lib.get_device_name)(dev) };
            if raw.is_null() {
                continue;
            }
            // SAFETY: non-null: a NUL-terminated string the device owns, read before the
            // list is freed.
            let name = unsafe { CStr::from_ptr(raw) }
                .to_string_lossy()
                .into_owned();
            if chosen.is_none() && wanted.as_deref().is_none_or(|w| w == name) {
                // SAFETY: `dev` is a listed device, still listed (the list is not freed yet).
                let ctx = unsafe { (lib.open_device)(dev) };
                chosen = Some((name.clone(), ctx));
            }
            names.push(name);
        }
        // SAFETY: `list` came from `ibv_get_device_list`; opened contexts outlive it.
        unsafe { (lib.free_device_list)(list) };
        let Some((name, ctx)) = chosen else {
            return Err(Error::NoRdma(match wanted {
                Some(w) => format!("no device named {w}; present: {names:?}"),
                None => format!("{LIBRARY} found no devices"),
            }));
        };
        if ctx.is_null() {
            return Err(os_error(&format!("opening {name}")));
        }
        // SAFETY: `ctx` is an open context.
        let pd = unsafe { (lib.alloc_pd)(ctx) };
        if pd.is_null() {
            let e = os_error(&format!("allocating a protection domain on {name}"));
            // SAFETY: `ctx` is open and nothing else uses it.
            unsafe { (lib.close_device)(ctx) };
            return Err(e);
        }
        let mut dev = Device {
            lib,
            ctx,
            pd,
            name,
            port: env_u8("REMORA_VERBS_PORT").unwrap_or(1),
            gid_index: 0,
            gid: [0; 16],
            lid: 0,
            mtu: 3,
        };
        dev.configure_port()?; // on error, `dev` drops and frees the pd and context
        Ok(Arc::new(dev))
    }

    fn configure_port(&mut self) -> Result<()> {
        let mut attr = [0u8; PORT_ATTR_BYTES];
        // SAFETY: `attr` is larger than `struct ibv_port_attr`, which is all the library
        // writes; the context is open.
        let rc = unsafe { (self.lib.query_port)(self.ctx, self.port, attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::Verbs(format!(
                "querying port {} of {}: {}",
                self.port,
                self.name,
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        let u32_at =
            |o: usize| u32::from_ne_bytes([attr[o], attr[o + 1], attr[o + 2], attr[o + 3]]);
        let state = u32_at(PORT_STATE);
        if state != PORT_ACTIVE {
            return Err(Error::NoRdma(format!(
                "port {} of {} is not active (state {state})",
                self.port, self.name
            )));
        }
        self.mtu = u8::try_from(u32_at(PORT_ACTIVE_MTU)).unwrap_or(3);
        self.lid = u16::from_ne_bytes([attr[PORT_LID], attr[PORT_LID + 1]]);
        let table = u32_at(PORT_GID_TBL_LEN).min(256);
        let mut first_nonzero = None;
        let pick = env_u8("REMORA_VERBS_GID_INDEX");
        for i in 0..table {
            let mut gid = [0u8; 16];
            // SAFETY: `gid` is a 16-byte out-buffer (`union ibv_gid`); the context is open.
            let rc = unsafe { (self.lib.query_gid)(self.ctx, self.port, i as c_int, &mut gid) };
            if rc != 0 || gid == [0; 16] {
                continue;
            }
            let index = i as u8;
            if pick == Some(index) {
                (self.gid_index, self.gid) = (index, gid);
                return Ok(());
            }
            let v4_mapped = gid[..10] == [0; 10] && gid[10..12] == [0xff, 0xff];
            if v4_mapped && pick.is_none() {
                (self.gid_index, self.gid) = (index, gid);
                return Ok(());
            }
            first_nonzero.get_or_insert((index, gid));
        }
        match (pick, first_nonzero) {
            (None, Some((index, gid))) => {
                (self.gid_index, self.gid) = (index, gid);
                Ok(())
            }
            _ => Err(Error::NoRdma(format!(
                "port {} of {} has no usable GID{}",
                self.port,
                self.name,
                pick.map_or(String::new(), |p| format!(" at index {p}"))
            ))),
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every Mr and Qp of this pd held an Arc<Device> and is gone; nothing else
        // uses the handles.
        unsafe {
            (self.lib.dealloc_pd)(self.pd);
            (self.lib.close_device)(self.ctx);
        }
    }
}

/// A registered memory region.
pub struct Mr {
    dev: Arc<Device>,
    mr: *mut c_void,
    pub addr: u64,
    pub len: usize,
    pub lkey: u32,
    pub rkey: u32,
}

// SAFETY: an ibv_mr handle may be used and deregistered from any thread; only `Drop` frees it.
unsafe impl Send for Mr {}
// SAFETY: shared access only reads the keys copied out at registration.
unsafe impl Sync for Mr {}

impl Mr {
    /// Registers `len` bytes at `addr`.
    ///
    /// # Safety
    /// The memory must stay mapped (and, with write access, writable) until the returned
    /// `Mr` is dropped: the device reads (and writes) it without the CPU's involvement.
    pub unsafe fn register(
        dev: &Arc<Device>,
        addr: *mut u8,
        len: usize,
        access: c_int,
    ) -> Result<Mr> {
        // SAFETY: the caller keeps the memory mapped; the pd is live.
        let mr = unsafe { (dev.lib.reg_mr)(dev.pd, addr.cast(), len, access) };
        if mr.is_null() {
            return Err(os_error(&format!(
                "registering {len} bytes with {}",
                dev.name
            )));
        }
        let base = mr.cast::<u8>();
        // SAFETY: `mr` points at a `struct ibv_mr`, whose keys sit at these offsets.
        let (lkey, rkey) = unsafe {
            (
                base.add(MR_LKEY).cast::<u32>().read_unaligned(),
                base.add(MR_RKEY).cast::<u32>().read_unaligned(),
            )
        };
        Ok(Mr {
            dev: dev.clone(),
            mr,
            addr: addr as u64,
            len,
            lkey,
            rkey,
        })
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered by `register`, deregistered once.
        unsafe { (self.dev.lib.dereg_mr)(self.mr) };
    }
}

/// A reliable-connection queue pair with its own completion queue.
pub struct Qp {
    dev: Arc<Device>,
    cq: *mut c_void,
    qp: *mut c_void,
    pub local: Endpoint,
}

// SAFETY: verbs on a QP and its CQ may be called from any thread; users serialize posting
// and polling through `&mut self`; only `Drop` frees the handles.
unsafe impl Send for Qp {}

impl Qp {
    /// Creates a queue pair for `depth` outstanding work requests.
    pub fn create(dev: &Arc<Device>, depth: u32) -> Result<Qp> {
        let cqe = c_int::try_from(depth * 2).unwrap_or(c_int::MAX);
        // SAFETY: the context is open; no channel, so completions are polled.
        let cq = unsafe {
            (dev.lib.create_cq)(dev.ctx, cqe, std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        if cq.is_null() {
            return Err(os_error(&format!(
                "creating a completion queue on {}",
                dev.name
            )));
        }
        let mut init = QpInitAttr {
            qp_context: std::ptr::null_mut(),
            send_cq: cq,
            recv_cq: cq,
            srq: std::ptr::null_mut(),
            cap: QpCap {
                max_send_wr: depth,
                max_recv_wr: 1,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: `init` is a valid `ibv_qp_init_attr` naming a live CQ on this pd's context.
        let qp = unsafe { (dev.lib.create_qp)(dev.pd, &mut init) };
        if qp.is_null() {
            let e = os_error(&format!("creating a queue pair on {}", dev.name));
            // SAFETY: the CQ is unused.
            unsafe { (dev.lib.destroy_cq)(cq) };
            return Err(e);
        }
        // SAFETY: `qp` points at a `struct ibv_qp`.
        let qpn = unsafe { qp.cast::<u8>().add(QP_NUM).cast::<u32>().read_unaligned() };
        let mut psn = [0u8; 4];
        getrandom::getrandom(&mut psn).map_err(|e| Error::Verbs(format!("random psn: {e}")))?;
        Ok(Qp {
            dev: dev.clone(),
            cq,
            qp,
            local: Endpoint {
                qpn,
                psn: u32::from_le_bytes(psn) & 0xff_ffff,
                lid: dev.lid,
                gid: dev.gid,
                mtu: dev.mtu,
            },
        })
    }

    fn modify(&mut self, attr: &mut QpAttr, mask: c_int, what: &str) -> Result<()> {
        // SAFETY: `attr` is a valid `ibv_qp_attr`; the QP is live.
        let rc = unsafe { (self.dev.lib.modify_qp)(self.qp, attr, mask) };
        if rc != 0 {
            return Err(Error::Verbs(format!(
                "moving queue pair {} to {what}: {}",
                self.local.qpn,
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        Ok(())
    }

    /// Connects to `remote` (INIT → RTR → RTS). `access`: what the remote side may do to
    /// memory through this QP (the MR's own flags still apply).
    pub fn connect(&mut self, remote: &Endpoint, access: c_int) -> Result<()> {
        let port = self.dev.port;
        let mut a = QpAttr {
            qp_state: QPS_INIT,
            port_num: port,
            qp_access_flags: access,
            ..QpAttr::default()
        };
        self.modify(
            &mut a,
            QP_STATE | QP_PKEY_INDEX | QP_PORT | QP_ACCESS_FLAGS,
            "INIT",
        )?;
        let mut a = QpAttr {
            qp_state: QPS_RTR,
            path_mtu: u32::from(self.local.mtu.min(remote.mtu).max(1)),
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: RD_ATOMIC,
            min_rnr_timer: 12,
            ah_attr: AhAttr {
                grh: GlobalRoute {
                    dgid: remote.gid,
                    sgid_index: self.dev.gid_index,
                    hop_limit: 64,
                    ..GlobalRoute::default()
                },
                dlid: remote.lid,
                is_global: 1,
                port_num: port,
                ..AhAttr::default()
            },
            ..QpAttr::default()
        };
        self.modify(
            &mut a,
            QP_STATE
                | QP_AV
                | QP_PATH_MTU
                | QP_DEST_QPN
                | QP_RQ_PSN
                | QP_MAX_DEST_RD_ATOMIC
                | QP_MIN_RNR_TIMER,
            "RTR",
        )?;
        let mut a = QpAttr {
            qp_state: QPS_RTS,
            sq_psn: self.local.psn,
            timeout: ACK_TIMEOUT,
            retry_cnt: RETRY_COUNT,
            rnr_retry: 7,
            max_rd_atomic: RD_ATOMIC,
            ..QpAttr::default()
        };
        self.modify(
            &mut a,
            QP_STATE | QP_TIMEOUT | QP_RETRY_CNT | QP_RNR_RETRY | QP_SQ_PSN | QP_MAX_QP_RD_ATOMIC,
            "RTS",
        )
    }

    /// Posts one signaled RDMA READ or WRITE between the first `len` bytes of the registered
    /// buffer `local` and `remote_addr` under `rkey`.
    pub fn post(
        &mut self,
        opcode: u32,
        wr_id: u64,
        local: &Mr,
        len: u32,
        remote_addr: u64,
        rkey: u32,
    ) -> Result<()> {
        if len as usize > local.len {
            return Err(Error::Verbs(format!(
                "local buffer of {} bytes cannot take {len} bytes",
                local.len
            )));
        }
        let mut sge = Sge {
            addr: local.addr,
            length: len,
            lkey: local.lkey,
        };
        let mut wr = SendWr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
            opcode,
            send_flags: SEND_SIGNALED,
            imm_data: 0,
            remote_addr,
            rkey,
            _pad: 0,
            _rest: [0; 9],
        };
        let mut bad: *mut SendWr = std::ptr::null_mut();
        // SAFETY: the context's `ops.post_send` is at this offset (what `ibv_post_send` calls);
        // `wr` and `sge` are valid for the call and the provider copies them; the local
        // range was checked against the registered buffer above.
        let rc = unsafe {
            let post: PostSend = self
                .ctx_op(OPS_POST_SEND)
                .ok_or_else(|| Error::Verbs("provider has no post_send".into()))?;
            post(self.qp, &mut wr, &mut bad)
        };
        if rc != 0 {
            return Err(Error::Verbs(format!(
                "posting a work request: {}",
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        Ok(())
    }

    /// Takes up to `wc.len()` completions off the queue; never blocks.
    pub fn poll(&mut self, wc: &mut [Wc]) -> Result<usize> {
        let n = c_int::try_from(wc.len()).unwrap_or(c_int::MAX);
        // SAFETY: `ops.poll_cq` sits at this offset (what `ibv_poll_cq` calls); `wc` has room
        // for `n` entries of `struct ibv_wc`.
        let rc = unsafe {
            let poll: PollCq = self
                .ctx_op(OPS_POLL_CQ)
                .ok_or_else(|| Error::Verbs("provider has no poll_cq".into()))?;
            poll(self.cq, n, wc.as_mut_ptr())
        };
        usize::try_from(rc).map_err(|_| Error::Verbs(format!("polling completions: error {rc}")))
    }

    /// The function pointer at `offset` of the device context (an `ibv_context_ops` entry).
    ///
    /// # Safety
    /// `offset` must be that of an entry whose prototype is `F`.
    unsafe fn ctx_op<F: Copy>(&self, offset: usize) -> Option<F> {
        const { assert!(size_of::<F>() == size_of::<*const c_void>()) };
        // SAFETY: the context is live and `offset` lies inside its ops table.
        let raw = unsafe {
            self.dev
                .ctx
                .cast::<u8>()
                .add(offset)
                .cast::<*const c_void>()
                .read()
        };
        if raw.is_null() {
            return None;
        }
        // SAFETY: a non-null entry of the stated prototype; `F` is a function pointer type of
        // the same size.
        Some(unsafe { std::mem::transmute_copy::<*const c_void, F>(&raw) })
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created by `create`; the QP goes before the CQ it uses; destroyed once.
        unsafe {
            (self.dev.lib.destroy_qp)(self.qp);
            (self.dev.lib.destroy_cq)(self.cq);
        }
    }
}

/// Whether an RDMA device can be opened here; `Err` says why not.
pub fn probe() -> Result<()> {
    Device::open().map(drop)
}
