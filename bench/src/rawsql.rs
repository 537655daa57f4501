//! A minimal, safe wrapper over the SQLite C API (through `libsqlite3-sys`) for the baselines:
//! one connection, prepared statements, nothing between the loop and the library.

use std::ffi::{CStr, CString, c_int};
use std::ptr;

use libsqlite3_sys as ffi;

/// A SQLite error: the result code and the library's message.
#[derive(Debug)]
pub struct SqlError(pub String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

/// Result of a SQLite call.
pub type SqlResult<T> = Result<T, SqlError>;

/// One open database connection.
pub struct Conn {
    raw: *mut ffi::sqlite3,
}

// SAFETY: the connection is opened with SQLITE_OPEN_FULLMUTEX and only ever used by one thread
// at a time (it is moved into the thread that runs a baseline loop).
unsafe impl Send for Conn {}

impl Conn {
    /// Opens (or creates) the database file with WAL, `synchronous=NORMAL`, foreign keys on and
    /// a 10 s busy timeout, the settings the service uses.
    pub fn open(path: &str) -> SqlResult<Conn> {
        let c_path = CString::new(path).map_err(|e| SqlError(e.to_string()))?;
        let mut raw = ptr::null_mut();
        let flags =
            ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_FULLMUTEX;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut raw, flags, ptr::null()) };
        let conn = Conn { raw };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        // The busy timeout first: connections opened at once (the dashboard baseline's threads)
        // otherwise fail at once on the lock that switching or recovering the WAL takes.
        conn.exec(
            "PRAGMA busy_timeout=10000; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
             PRAGMA foreign_keys=ON;",
        )?;
        Ok(conn)
    }

    fn error(&self, rc: c_int) -> SqlError {
        if self.raw.is_null() {
            return SqlError(format!("sqlite error {rc}"));
        }
        // SAFETY: the connection is open; the message is a NUL-terminated string owned by SQLite.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.raw)) };
        SqlError(format!("sqlite error {rc}: {}", message.to_string_lossy()))
    }

    /// Runs one or more statements without parameters.
    pub fn exec(&self, sql: &str) -> SqlResult<()> {
        let c_sql = CString::new(sql).map_err(|e| SqlError(e.to_string()))?;
        // SAFETY: open connection, valid C string, no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.raw,
                c_sql.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(())
    }

    /// Prepares a statement for repeated use.
    pub fn prepare(&self, sql: &str) -> SqlResult<Stmt<'_>> {
        let c_sql = CString::new(sql).map_err(|e| SqlError(e.to_string()))?;
        let mut raw = ptr::null_mut();
        // SAFETY: open connection, valid C string and out-pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.raw, c_sql.as_ptr(), -1, &mut raw, ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(Stmt { raw, conn: self })
    }

    /// Rows changed by the last statement.
    pub fn changes(&self) -> i64 {
        // SAFETY: open connection.
        i64::from(unsafe { ffi::sqlite3_changes(self.raw) })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: statements borrow the connection, so none outlives it; close tolerates null.
        unsafe {
            ffi::sqlite3_close(self.raw);
        }
    }
}

/// A prepared statement; parameters are 1-based, columns 0-based.
pub struct Stmt<'c> {
    raw: *mut ffi::sqlite3_stmt,
    conn: &'c Conn,
}

impl Stmt<'_> {
    fn check(&self, rc: c_int) -> SqlResult<()> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.conn.error(rc))
        }
    }

    /// Binds an integer.
    pub fn bind_i64(&mut self, index: i32, value: i64) -> SqlResult<()> {
        // SAFETY: live statement.
        self.check(unsafe { ffi::sqlite3_bind_int64(self.raw, index, value) })
    }

    /// Binds text (copied by SQLite).
    pub fn bind_text(&mut self, index: i32, value: &str) -> SqlResult<()> {
        let len = c_int::try_from(value.len()).map_err(|e| SqlError(e.to_string()))?;
        // SAFETY: live statement; SQLITE_TRANSIENT makes SQLite copy the bytes.
        self.check(unsafe {
            ffi::sqlite3_bind_text(
                self.raw,
                index,
                value.as_ptr().cast(),
                len,
                ffi::SQLITE_TRANSIENT(),
            )
        })
    }

    /// Binds a blob (copied by SQLite).
    pub fn bind_blob(&mut self, index: i32, value: &[u8]) -> SqlResult<()> {
        let len = c_int::try_from(value.len()).map_err(|e| SqlError(e.to_string()))?;
        // SAFETY: live statement; SQLITE_TRANSIENT makes SQLite copy the bytes.
        self.check(unsafe {
            ffi::sqlite3_bind_blob(
                self.raw,
                index,
                value.as_ptr().cast(),
                len,
                ffi::SQLITE_TRANSIENT(),
            )
        })
    }

    /// Steps once: `true` when a row is available, `false` when done.
    pub fn step(&mut self) -> SqlResult<bool> {
        // SAFETY: live statement.
        match unsafe { ffi::sqlite3_step(self.raw) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(self.conn.error(rc)),
        }
    }

    /// Resets the statement and clears its bindings for the next use.
    pub fn reset(&mut self) {
        // SAFETY: live statement.
        unsafe {
            ffi::sqlite3_reset(self.raw);
            ffi::sqlite3_clear_bindings(self.raw);
        }
    }

    /// Runs a statement that returns no rows, then resets it.
    pub fn run(&mut self) -> SqlResult<()> {
        let outcome = self.step().map(|_| ());
        self.reset();
        outcome
    }

    /// Integer column of the current row.
    pub fn column_i64(&self, index: i32) -> i64 {
        // SAFETY: live statement positioned on a row.
        unsafe { ffi::sqlite3_column_int64(self.raw, index) }
    }

    /// Text column of the current row (empty when NULL).
    pub fn column_text(&self, index: i32) -> &str {
        // SAFETY: live statement on a row; the pointer stays valid until the next step/reset,
        // which needs `&mut self`, so the borrow cannot outlive it.
        unsafe {
            let data = ffi::sqlite3_column_text(self.raw, index);
            if data.is_null() {
                return "";
            }
            let len = usize::try_from(ffi::sqlite3_column_bytes(self.raw, index)).unwrap_or(0);
            std::str::from_utf8(std::slice::from_raw_parts(data, len)).unwrap_or("")
        }
    }

    /// Blob column of the current row (empty when NULL).
    pub fn column_blob(&self, index: i32) -> &[u8] {
        // SAFETY: as for `column_text`.
        unsafe {
            let data = ffi::sqlite3_column_blob(self.raw, index);
            if data.is_null() {
                return &[];
            }
            let len = usize::try_from(ffi::sqlite3_column_bytes(self.raw, index)).unwrap_or(0);
            std::slice::from_raw_parts(data.cast(), len)
        }
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: finalizing a statement we prepared, once.
        unsafe {
            ffi::sqlite3_finalize(self.raw);
        }
    }
}
