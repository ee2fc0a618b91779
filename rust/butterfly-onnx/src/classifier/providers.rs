//! Execution providers: which ONNX Runtime providers the sessions run on. The same rule and
//! the same messages as the Python package's `butterfly_onnx._backends.providers`, from the
//! same file (`python/butterfly_onnx/data/providers.json`): a list of providers in priority
//! order, each a name with string options, or the `device` shorthand (`cpu`, `cuda:1`,
//! `openvino:GPU`, ...) that stands for one.
//!
//! Nothing falls back: a provider the loaded ONNX Runtime was not built with is an
//! [`Error::ProviderUnavailable`] naming it, what the runtime has and what to install; one
//! that fails to register is the same error with ONNX Runtime's reason (ort's
//! `error_on_failure`, so it never silently drops it). ONNX Runtime appends its CPU provider
//! to every session for the nodes no other provider takes: [`in_use`] lists it last, as
//! onnxruntime's `get_providers()` does.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr};
use std::sync::LazyLock;

use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProviderDispatch};

use crate::{Error, Result};

/// The table both languages read.
pub const PROVIDERS_JSON: &str = include_str!("../../../../python/butterfly_onnx/data/providers.json");

/// One provider to register: ONNX Runtime's name and its options (strings, as onnxruntime's
/// Python API turns them into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub options: Vec<(String, String)>,
}

impl Provider {
    pub fn new(name: impl Into<String>) -> Self {
        Provider { name: name.into(), options: Vec::new() }
    }
}

#[derive(Debug, serde::Deserialize)]
struct Table {
    default: String,
    providers: BTreeMap<String, ProviderEntry>,
    devices: BTreeMap<String, DeviceEntry>,
}

#[derive(Debug, serde::Deserialize)]
struct ProviderEntry {
    install: String,
    /// `"any"` or the list of the only option keys taken.
    options: serde_json::Value,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct DeviceEntry {
    providers: Vec<String>,
    index_option: Option<String>,
    index_kind: Option<String>,
}

static TABLE: LazyLock<Table> =
    LazyLock::new(|| serde_json::from_str(PROVIDERS_JSON).expect("providers.json has the table's fields"));

fn device_entry(name: &str) -> Option<DeviceEntry> {
    TABLE.devices.get(name).cloned()
}

/// ONNX Runtime's CPU provider's name (what runs when nothing is asked for).
pub fn cpu_name() -> &'static str {
    &TABLE.default
}

/// The default: the CPU provider alone.
pub fn cpu() -> Vec<Provider> {
    vec![Provider::new(cpu_name())]
}

/// The accepted `device` values, as the error messages and `--help` list them (sorted).
pub fn device_help() -> String {
    let forms: Vec<String> = TABLE
        .devices
        .keys()
        .map(|name| match device_entry(name).and_then(|d| d.index_kind).as_deref() {
            Some("int") => format!("{name}[:N]"),
            Some(_) => format!("{name}[:DEVICE_TYPE]"),
            None => name.clone(),
        })
        .collect();
    forms.join(", ")
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument { reason }
}

/// The providers the `device` shorthand stands for (`cuda:1`: the CUDA provider with
/// `device_id=1`).
pub fn from_device(device: &str) -> Result<Vec<Provider>> {
    let (name, index) = match device.split_once(':') {
        Some((name, index)) => (name, Some(index)),
        None => (device, None),
    };
    let entry = device_entry(&name.to_lowercase())
        .filter(|entry| index.is_none() || entry.index_option.is_some())
        .ok_or_else(|| invalid(format!("unknown device '{device}'; choose one of {}", device_help())))?;
    let mut options = Vec::new();
    if let (Some(index), Some(option)) = (index, &entry.index_option) {
        let is_number = !index.is_empty() && index.chars().all(|c| c.is_ascii_digit());
        if entry.index_kind.as_deref() == Some("int") && !is_number {
            return Err(invalid(format!("device '{device}': the index after ':' must be a number, got '{index}'")));
        }
        if index.is_empty() {
            return Err(invalid(format!("device '{device}': nothing after ':'")));
        }
        options.push((option.clone(), index.to_string()));
    }
    let cpu = cpu_name();
    Ok(entry
        .providers
        .into_iter()
        .map(|name| Provider { options: if name == cpu { Vec::new() } else { options.clone() }, name })
        .collect())
}

/// Refuse unknown names, options a provider does not take, duplicates and an empty list.
pub fn check(providers: &[Provider]) -> Result<()> {
    if providers.is_empty() {
        return Err(invalid("providers is empty; give at least one (or leave it None for the CPU)".into()));
    }
    for (i, provider) in providers.iter().enumerate() {
        let entry = TABLE.providers.get(&provider.name).ok_or_else(|| {
            let known: Vec<&str> = TABLE.providers.keys().map(String::as_str).collect();
            invalid(format!("unknown execution provider '{}'; known: {}", provider.name, known.join(", ")))
        })?;
        if let serde_json::Value::Array(allowed) = &entry.options {
            let allowed: Vec<&str> = allowed.iter().filter_map(|v| v.as_str()).collect();
            let mut keys: Vec<&str> = provider.options.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            if let Some(extra) = keys.into_iter().find(|k| !allowed.contains(k)) {
                let takes =
                    if allowed.is_empty() { "none".to_string() } else { format!("only {}", allowed.join(", ")) };
                return Err(invalid(format!(
                    "{} takes no option '{extra}' (options it takes: {takes})",
                    provider.name
                )));
            }
        }
        if providers[..i].iter().any(|p| p.name == provider.name) {
            return Err(invalid(format!("providers: {} is given twice", provider.name)));
        }
    }
    Ok(())
}

/// The providers the loaded ONNX Runtime was built with (`ort.get_available_providers()`).
/// ONNX Runtime must be loaded ([`crate::runtime::ensure_loaded`]).
pub fn available() -> Result<Vec<String>> {
    let api = ort::api();
    let mut names: *mut *mut c_char = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: the documented C API call; the list is read, then released by its own call.
    let status = unsafe { (api.GetAvailableProviders)(&mut names, &mut count) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is an OrtStatus to read and release.
        let reason = unsafe { CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned() };
        unsafe { (api.ReleaseStatus)(status.0) };
        return Err(Error::RuntimeUnavailable { reason: format!("cannot list the execution providers: {reason}") });
    }
    let mut out = Vec::new();
    for i in 0..usize::try_from(count).unwrap_or(0) {
        // SAFETY: `count` valid NUL-terminated strings.
        out.push(unsafe { CStr::from_ptr(*names.add(i)) }.to_string_lossy().into_owned());
    }
    if !names.is_null() {
        // SAFETY: released once, with the count it came with.
        let status = unsafe { (api.ReleaseAvailableProviders)(names, count) };
        if !status.0.is_null() {
            unsafe { (api.ReleaseStatus)(status.0) };
        }
    }
    Ok(out)
}

fn install(name: &str) -> &str {
    TABLE.providers.get(name).map_or("", |entry| entry.install.as_str())
}

/// Refuse the first requested provider the loaded ONNX Runtime was not built with.
pub fn check_available(providers: &[Provider], available: &[String]) -> Result<()> {
    match providers.iter().find(|p| !available.contains(&p.name)) {
        Some(missing) => Err(Error::ProviderUnavailable {
            provider: missing.name.clone(),
            message: format!(
                "execution provider {} is not in the loaded ONNX Runtime, which has {}; to get it: {}",
                missing.name,
                available.join(", "),
                install(&missing.name)
            ),
        }),
        None => Ok(()),
    }
}

/// The error of a provider the runtime has but that did not initialise.
pub fn init_failed(name: &str, reason: &str) -> Error {
    Error::ProviderUnavailable {
        provider: name.to_string(),
        message: format!("execution provider {name} failed to initialise: {reason}; to get it: {}", install(name)),
    }
}

/// The providers a session on `providers` uses, as onnxruntime's `get_providers()` lists
/// them: the requested ones in order, then the CPU provider ONNX Runtime appends.
pub fn in_use(providers: &[Provider]) -> Vec<String> {
    let mut names: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
    if !names.iter().any(|n| n == cpu_name()) {
        names.push(cpu_name().to_string());
    }
    names
}

/// `ort`'s registration of one provider (checked by [`check`]), failing instead of falling
/// back.
pub(super) fn dispatch(provider: &Provider) -> Result<ExecutionProviderDispatch> {
    fn configured<E: ArbitrarilyConfigurableExecutionProvider>(mut ep: E, options: &[(String, String)]) -> E {
        for (key, value) in options {
            ep = ep.with_arbitrary_config(key, value);
        }
        ep
    }
    let options = &provider.options;
    let dispatch = match provider.name.as_str() {
        "CPUExecutionProvider" => ort::ep::CPU::default().with_arena_allocator(true).build(),
        "CUDAExecutionProvider" => configured(ort::ep::CUDA::default(), options).build(),
        "TensorrtExecutionProvider" => configured(ort::ep::TensorRT::default(), options).build(),
        "OpenVINOExecutionProvider" => configured(ort::ep::OpenVINO::default(), options).build(),
        "CoreMLExecutionProvider" => configured(ort::ep::CoreML::default(), options).build(),
        "DmlExecutionProvider" => {
            let mut ep = ort::ep::DirectML::default();
            if let Some((_, id)) = options.iter().find(|(k, _)| k == "device_id") {
                let id = id
                    .parse()
                    .map_err(|_| invalid(format!("DmlExecutionProvider: device_id {id:?} is not a number")))?;
                ep = ep.with_device_id(id);
            }
            ep.build()
        }
        other => return Err(invalid(format!("unknown execution provider {other:?}"))),
    };
    Ok(dispatch.error_on_failure())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_of_the_table_has_a_registration() {
        for name in TABLE.providers.keys() {
            assert!(dispatch(&Provider::new(name.clone())).is_ok(), "{name}");
        }
        for device in TABLE.devices.keys() {
            let providers = from_device(device).unwrap();
            check(&providers).unwrap();
        }
    }

    #[test]
    fn device_shorthand() {
        let cuda = from_device("cuda:1").unwrap();
        assert_eq!(
            cuda,
            vec![Provider { name: "CUDAExecutionProvider".into(), options: vec![("device_id".into(), "1".into())] }]
        );
        let trt = from_device("tensorrt").unwrap();
        assert_eq!(
            trt.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
        );
        assert_eq!(from_device("openvino:GPU").unwrap()[0].options, vec![("device_type".into(), "GPU".into())]);
        for bad in ["gpu", "cuda:x", "cpu:0", "cuda:"] {
            assert!(matches!(from_device(bad), Err(Error::InvalidArgument { .. })), "{bad}");
        }
        assert_eq!(in_use(&cuda), ["CUDAExecutionProvider", "CPUExecutionProvider"]);
    }
}
