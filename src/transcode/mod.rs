//! gRPC-JSON transcoding: JSON/HTTP clients call gRPC services through the
//! `google.api.http` rules in a descriptor set (`protoc --include_imports
//! --descriptor_set_out=api.pb`), as Envoy's transcoder and grpc-gateway do.
//!
//! A request is matched to a rule by method and path template; its JSON
//! body, path variables and query parameters make the method's input
//! message, sent as one gRPC message. The answer's message (or each, for a
//! server stream) comes back as proto3 JSON; a gRPC error status comes back
//! as its HTTP status with a problem document.

mod exchange;
pub mod template;

pub(crate) use exchange::transcode;

use crate::body::ResponseBody;
use crate::config::model::TranscodeConfig;
use crate::error::{ErrorKind, ProxyError};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Response, StatusCode};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage,
};
use serde_json::{Map, Value};
use template::Template;

/// A route's transcoding rules.
#[derive(Debug)]
pub struct Transcoder {
    rules: Vec<Rule>,
    /// Largest answer read (it is read whole, to turn it into JSON).
    pub max_body: u64,
}

#[derive(Debug)]
pub struct Rule {
    method: Method,
    template: Template,
    /// `/package.Service/Method`.
    pub grpc_path: http::uri::PathAndQuery,
    grpc_method: MethodDescriptor,
    body: BodyRule,
    /// `response_body`: the answer is this field of the output message.
    response_body: Option<FieldDescriptor>,
}

#[derive(Debug)]
enum BodyRule {
    /// No body: fields come from the path and the query.
    Ignored,
    /// `body: "*"`: the JSON body is the input message.
    Whole,
    /// `body: "field"`: the JSON body is that field.
    Field(FieldDescriptor),
}

impl Transcoder {
    /// Reads the descriptor set and the rules of `services` (all, when none
    /// are named). Errors are `(field, message)`.
    pub fn compile(config: &TranscodeConfig) -> Result<Transcoder, Vec<(String, String)>> {
        let one = |field: &str, message: String| vec![(field.to_string(), message)];
        let bytes = std::fs::read(&config.descriptors)
            .map_err(|e| one("descriptors", format!("cannot read {}: {e}", config.descriptors)))?;
        let pool = DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
            one(
                "descriptors",
                format!(
                    "{} is not a descriptor set ({e}): make it with `protoc --include_imports --descriptor_set_out=FILE`",
                    config.descriptors
                ),
            )
        })?;
        let http = pool.get_extension_by_name("google.api.http");
        let services: Vec<_> = match config.services.is_empty() {
            true => pool.services().collect(),
            false => {
                let mut found = Vec::new();
                for (i, name) in config.services.iter().enumerate() {
                    match pool.get_service_by_name(name) {
                        Some(service) => found.push(service),
                        None => {
                            let known: Vec<_> = pool.services().map(|s| s.full_name().to_string()).collect();
                            return Err(one(
                                &format!("services[{i}]"),
                                format!("{name:?} is not in {}; it has {known:?}", config.descriptors),
                            ));
                        }
                    }
                }
                found
            }
        };
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for service in &services {
            for method in service.methods() {
                let at = format!("{}.{}", service.full_name(), method.name());
                if method.is_client_streaming() {
                    continue;
                }
                // Every method answers `POST /package.Service/Method` with its
                // input as the body, as Envoy's transcoder does.
                let grpc_path = format!("/{}/{}", service.full_name(), method.name());
                let mut bindings = vec![(Method::POST, grpc_path.clone(), "*".to_string(), String::new())];
                if let Some(http) = &http {
                    let options = method.options();
                    if options.has_extension(http) {
                        if let prost_reflect::Value::Message(rule) = &*options.get_extension(http) {
                            collect_bindings(rule, &mut bindings);
                        }
                    }
                }
                for (verb, path, body, response_body) in bindings {
                    match Rule::new(&method, &grpc_path, verb, &path, &body, &response_body) {
                        Ok(rule) => rules.push(rule),
                        Err(e) => errors.push(("descriptors".to_string(), format!("{at}: {e}"))),
                    }
                }
            }
        }
        if rules.is_empty() && errors.is_empty() {
            errors.push((
                "services".into(),
                format!("{} holds no method to transcode", config.descriptors),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Rules from annotations first: a service's own `POST /pkg.S/M`
        // comes after any template that could match the same path.
        rules.sort_by_key(|rule| rule.template_is_grpc_path());
        Ok(Transcoder {
            rules,
            max_body: config.max_body.0,
        })
    }

    /// The rule for a request, with its path variables. `Err` is the
    /// methods the path has rules for (empty when none: 404).
    pub fn find(&self, method: &Method, path: &str) -> Result<(&Rule, Vec<String>), Vec<Method>> {
        let mut allowed = Vec::new();
        for rule in &self.rules {
            if let Some(values) = rule.template.matches(path) {
                if rule.method == *method {
                    return Ok((rule, values));
                }
                allowed.push(rule.method.clone());
            }
        }
        Err(allowed)
    }
}

/// `(method, path, body, response_body)` of a `HttpRule` and its
/// `additional_bindings`.
fn collect_bindings(rule: &DynamicMessage, out: &mut Vec<(Method, String, String, String)>) {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(prost_reflect::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let pattern = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ]
    .into_iter()
    .find_map(|(name, method)| rule.has_field_by_name(name).then(|| (method, text(name))))
    .or_else(|| match rule.get_field_by_name("custom").as_deref() {
        Some(prost_reflect::Value::Message(custom)) if rule.has_field_by_name("custom") => {
            let kind = match custom.get_field_by_name("kind").as_deref() {
                Some(prost_reflect::Value::String(kind)) => kind.clone(),
                _ => String::new(),
            };
            let path = match custom.get_field_by_name("path").as_deref() {
                Some(prost_reflect::Value::String(path)) => path.clone(),
                _ => String::new(),
            };
            Method::from_bytes(kind.as_bytes()).ok().map(|m| (m, path))
        }
        _ => None,
    });
    if let Some((method, path)) = pattern {
        out.push((method, path, text("body"), text("response_body")));
    }
    if let Some(prost_reflect::Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
        for binding in more {
            if let prost_reflect::Value::Message(binding) = binding {
                collect_bindings(binding, out);
            }
        }
    }
}

impl Rule {
    fn new(
        grpc_method: &MethodDescriptor,
        grpc_path: &str,
        method: Method,
        path: &str,
        body: &str,
        response_body: &str,
    ) -> Result<Rule, String> {
        let template = Template::parse(path)?;
        let input = grpc_method.input();
        for variable in &template.variables {
            let field = field_at(&input, variable)?;
            if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
                return Err(format!("path variable {:?} is not a scalar field", variable.join(".")));
            }
        }
        let body = match body {
            "" => BodyRule::Ignored,
            "*" => BodyRule::Whole,
            name => BodyRule::Field(
                input
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("body {name:?} is not a field of {}", input.full_name()))?,
            ),
        };
        let output = grpc_method.output();
        let response_body = match response_body {
            "" => None,
            name => Some(
                output
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("response_body {name:?} is not a field of {}", output.full_name()))?,
            ),
        };
        Ok(Rule {
            method,
            template,
            grpc_path: grpc_path.parse().map_err(|_| format!("{grpc_path:?} is not a path"))?,
            grpc_method: grpc_method.clone(),
            body,
            response_body,
        })
    }

    fn template_is_grpc_path(&self) -> bool {
        self.template.matches(self.grpc_path.path()).is_some() && self.template.variables.is_empty()
    }

    /// The input message from the request, as one gRPC message (flag, length, bytes).
    pub fn request(&self, values: &[String], query: Option<&str>, body: &[u8]) -> Result<Bytes, ProxyError> {
        let input = self.grpc_method.input();
        let mut json = match &self.body {
            BodyRule::Ignored => Value::Object(Map::new()),
            BodyRule::Whole if body.is_empty() => Value::Object(Map::new()),
            BodyRule::Whole => parse_body(body)?,
            BodyRule::Field(field) => {
                let mut object = Map::new();
                if !body.is_empty() {
                    object.insert(field.json_name().to_string(), parse_body(body)?);
                }
                Value::Object(object)
            }
        };
        for (path, value) in self.template.variables.iter().zip(values) {
            set(&input, &mut json, path, value, false).map_err(bad_request)?;
        }
        // Query parameters fill what the body does not; unknown ones are left
        // to other uses (an API key, a cache buster).
        if !matches!(self.body, BodyRule::Whole) {
            for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
                let path: Vec<String> = name.split('.').map(str::to_string).collect();
                if field_at(&input, &path).is_ok() {
                    set(&input, &mut json, &path, &value, true).map_err(bad_request)?;
                }
            }
        }
        let message = DynamicMessage::deserialize(input, json).map_err(|e| {
            bad_request(format!(
                "the request does not make a {}: {e}",
                self.grpc_method.input().full_name()
            ))
        })?;
        let encoded = message.encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + encoded.len());
        frame.put_u8(0);
        frame.put_u32(encoded.len() as u32);
        frame.extend_from_slice(&encoded);
        Ok(frame.freeze())
    }

    /// The service's answer as JSON: the message (or the messages, as an
    /// array, for a server stream), or the error status as a problem.
    pub fn response(
        &self,
        (status, head): (StatusCode, &HeaderMap),
        body: &[u8],
        trailers: Option<&HeaderMap>,
        request_id: &http::HeaderValue,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if status != StatusCode::OK {
            return Err(broken(format!("the gRPC service answered HTTP {status}")));
        }
        let grpc_status = trailers
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.get("grpc-status"))
            .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
            .ok_or_else(|| broken("the gRPC service's answer has no grpc-status".into()))?;
        if grpc_status != 0 {
            let message = trailers
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| head.get("grpc-message"))
                .map(|v| {
                    percent_encoding::percent_decode(v.as_bytes())
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            return Ok(crate::error::problem(
                http_status_of(grpc_status),
                &message,
                serde_json::json!({
                    "grpc_status": grpc_status,
                    "request_id": request_id.to_str().unwrap_or_default(),
                }),
            ));
        }
        let output = self.grpc_method.output();
        let mut messages = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if rest.len() < 5 {
                return Err(broken("the gRPC answer ends inside a message".into()));
            }
            if rest[0] != 0 {
                return Err(broken(
                    "the gRPC answer is compressed, which transcoding does not read".into(),
                ));
            }
            let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let bytes = rest
                .get(5..5 + length)
                .ok_or_else(|| broken("the gRPC answer ends inside a message".into()))?;
            let message = DynamicMessage::decode(output.clone(), bytes)
                .map_err(|e| broken(format!("the gRPC answer is not a {}: {e}", output.full_name())))?;
            messages.push(self.to_json(&message)?);
            rest = &rest[5 + length..];
        }
        let json = match (self.grpc_method.is_server_streaming(), messages.len()) {
            (true, _) => Value::Array(messages),
            (false, 1) => messages.remove(0),
            (false, n) => return Err(broken(format!("a unary gRPC answer held {n} messages"))),
        };
        let mut response = Response::new(ResponseBody::full(json.to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    fn to_json(&self, message: &DynamicMessage) -> Result<Value, ProxyError> {
        let json = match &self.response_body {
            Some(field) => {
                let value = message.get_field(field);
                let mut wrapper = DynamicMessage::new(message.descriptor());
                wrapper.set_field(field, value.into_owned());
                let whole = serde_json::to_value(&wrapper).map_err(|e| broken(e.to_string()))?;
                whole.get(field.json_name()).cloned().unwrap_or(Value::Null)
            }
            None => serde_json::to_value(message).map_err(|e| broken(e.to_string()))?,
        };
        Ok(json)
    }
}

/// The field a dotted path names, through nested messages.
fn field_at(message: &MessageDescriptor, path: &[String]) -> Result<FieldDescriptor, String> {
    let mut current = message.clone();
    let mut found = None;
    for (i, name) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| format!("{:?} is not a field of {}", path.join("."), message.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                _ => return Err(format!("{:?}: {name} is not a message", path.join("."))),
            }
        }
        found = Some(field);
    }
    found.ok_or_else(|| "an empty field path".to_string())
}

/// Sets the field at `path` in the JSON form of `message` from a text
/// value (a path variable or a query parameter); repeated fields collect
/// every value when `append`.
fn set(message: &MessageDescriptor, json: &mut Value, path: &[String], text: &str, append: bool) -> Result<(), String> {
    let mut current = message.clone();
    let mut node = json;
    for (i, name) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| format!("{name:?} is not a field of {}", current.full_name()))?;
        let Value::Object(object) = node else {
            return Err(format!("{:?} is set twice", path.join(".")));
        };
        if i + 1 == path.len() {
            let value = scalar(&field, text)?;
            match object.get_mut(field.json_name()) {
                Some(Value::Array(values)) if field.is_list() && append => values.push(value),
                _ if field.is_list() => {
                    object.insert(field.json_name().to_string(), Value::Array(vec![value]));
                }
                _ => {
                    object.insert(field.json_name().to_string(), value);
                }
            }
            return Ok(());
        }
        let Kind::Message(inner) = field.kind() else {
            return Err(format!("{name} is not a message"));
        };
        current = inner;
        node = object
            .entry(field.json_name().to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// A text value as the JSON the field's kind takes: booleans are parsed;
/// proto3 JSON takes numbers, enums and bytes as strings.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    match field.kind() {
        Kind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{}: {text:?} is not true or false", field.name())),
        },
        _ => Ok(Value::String(text.to_string())),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ProxyError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("the request body is not JSON: {e}")))
}

fn bad_request(detail: String) -> ProxyError {
    ProxyError::new(ErrorKind::BadRequest, detail)
}

fn broken(detail: String) -> ProxyError {
    ProxyError::new(ErrorKind::UpstreamBroken, detail)
}

/// google.rpc.Code → HTTP, as in google/rpc/code.proto's comments and
/// grpc-gateway.
fn http_status_of(code: u16) -> StatusCode {
    let status = match code {
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
