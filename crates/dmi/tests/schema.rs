//! The compiled schema against upstream's facts (KubeEdge v1.20 `apis/dmi/v1beta1/api.proto`):
//! every message's fields by name, number and type, and both services' methods. A wrong field
//! number would still round-trip between two Rust ends, so only a table like this catches it.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::FileDescriptorSet;
use prost_types::field_descriptor_proto::{Label, Type};

/// `Message: field=number:type ...`; a type is a scalar, a message name, `[T]` for repeated and
/// `{K:V}` for a map.
const UPSTREAM: &str = "
MapperRegisterRequest: withData=1:bool mapper=2:MapperInfo
MapperRegisterResponse: modelList=1:[DeviceModel] deviceList=2:[Device]
DeviceModel: name=1:string spec=2:DeviceModelSpec namespace=3:string
DeviceModelSpec: properties=1:[ModelProperty] commands=2:[DeviceCommand]
ModelProperty: name=1:string description=2:string type=3:string accessMode=4:string minimum=5:string maximum=6:string unit=7:string
DeviceCommand: name=1:string url=2:string method=3:string status_code=4:[string] parameters=5:[string] response=6:bytes
Device: name=1:string spec=2:DeviceSpec status=3:DeviceStatus namespace=4:string
DeviceSpec: deviceModelReference=1:string protocol=2:ProtocolConfig properties=3:[DeviceProperty] methods=4:[DeviceMethod]
DeviceMethod: name=1:string description=2:string propertyNames=3:[string]
DeviceProperty: name=1:string desired=2:TwinProperty visitors=3:VisitorConfig reportCycle=4:int64 collectCycle=5:int64 reportToCloud=6:bool pushMethod=7:PushMethod
ProtocolConfig: protocolName=1:string configData=2:CustomizedValue
VisitorConfig: protocolName=1:string configData=2:CustomizedValue
CustomizedValue: data=1:{string:Any}
PushMethod: http=1:PushMethodHTTP mqtt=2:PushMethodMQTT otel=4:PushMethodOTEL dbMethod=3:DBMethod anomalyDetection=5:AnomalyDetection
PushMethodHTTP: hostname=1:string port=2:int64 requestpath=3:string timeout=4:int64
PushMethodMQTT: address=1:string topic=2:string qos=3:int32 retained=4:bool
PushMethodOTEL: endpointURL=1:string
DBMethod: influxdb2=1:DBMethodInfluxdb2 redis=2:DBMethodRedis tdengine=3:DBMethodTDEngine mysql=4:DBMethodMySQL
DBMethodInfluxdb2: influxdb2ClientConfig=1:Influxdb2ClientConfig influxdb2DataConfig=2:Influxdb2DataConfig
Influxdb2DataConfig: measurement=1:string tag=2:{string:string} fieldKey=3:string
Influxdb2ClientConfig: url=1:string org=2:string bucket=3:string
DBMethodRedis: redisClientConfig=1:RedisClientConfig
RedisClientConfig: addr=1:string db=2:int32 poolsize=3:int32 minIdleConns=4:int32
DBMethodTDEngine: tdEngineClientConfig=1:TDEngineClientConfig
TDEngineClientConfig: addr=1:string dbname=2:string
DBMethodMySQL: mysqlClientConfig=1:MySQLClientConfig
MySQLClientConfig: addr=1:string database=2:string userName=3:string
DBMethodOTEL: otelExporterConfig=1:OTELExporterConfig
OTELExporterConfig: endpointURL=1:string
AnomalyDetection: data=1:{string:Any}
MapperInfo: name=1:string version=2:string api_version=3:string protocol=4:string address=5:bytes state=6:string
ReportDeviceStatusRequest: deviceName=1:string reportedDevice=2:DeviceStatus deviceNamespace=3:string
ReportDeviceStatesRequest: deviceName=1:string deviceNamespace=2:string state=3:string
DeviceStatus: twins=1:[Twin] reportToCloud=2:bool reportCycle=3:int64
Twin: propertyName=1:string observedDesired=2:TwinProperty reported=3:TwinProperty
TwinProperty: value=1:string metadata=2:{string:string}
ReportDeviceStatusResponse:
ReportDeviceStatesResponse:
RegisterDeviceRequest: device=1:Device
RegisterDeviceResponse: deviceName=1:string deviceNamespace=2:string
CreateDeviceModelRequest: model=1:DeviceModel
CreateDeviceModelResponse: deviceModelName=1:string deviceModelNamespace=2:string
RemoveDeviceRequest: deviceName=1:string deviceNamespace=2:string
RemoveDeviceResponse:
RemoveDeviceModelRequest: modelName=1:string modelNamespace=2:string
RemoveDeviceModelResponse:
UpdateDeviceRequest: device=1:Device
UpdateDeviceResponse:
UpdateDeviceModelRequest: model=1:DeviceModel
UpdateDeviceModelResponse:
GetDeviceRequest: deviceName=1:string deviceNamespace=2:string
GetDeviceResponse: device=1:Device
";

fn scalar(t: Type) -> &'static str {
    match t {
        Type::String => "string",
        Type::Bool => "bool",
        Type::Int32 => "int32",
        Type::Int64 => "int64",
        Type::Bytes => "bytes",
        other => panic!("unexpected scalar {other:?}"),
    }
}

#[test]
fn messages_match_upstream() {
    let fds = FileDescriptorSet::decode(kubeedge_dmi::FILE_DESCRIPTOR_SET).unwrap();
    let file = fds.file.iter().find(|f| f.name() == "api.proto").unwrap();
    assert_eq!(file.package(), "v1beta1");
    let mut ours = BTreeMap::new();
    for msg in &file.message_type {
        let entries: BTreeMap<_, _> = msg
            .nested_type
            .iter()
            .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
            .map(|n| (n.name().to_owned(), n))
            .collect();
        let ty_of = |f: &prost_types::FieldDescriptorProto| -> String {
            let t = f.r#type();
            if t == Type::Message {
                let name = f.type_name().rsplit('.').next().unwrap().to_owned();
                if let Some(entry) = entries.get(&name) {
                    let (k, v) = (&entry.field[0], &entry.field[1]);
                    let v = if v.r#type() == Type::Message {
                        v.type_name().rsplit('.').next().unwrap().to_owned()
                    } else {
                        scalar(v.r#type()).to_owned()
                    };
                    return format!("{{{}:{v}}}", scalar(k.r#type()));
                }
                name
            } else {
                scalar(t).to_owned()
            }
        };
        let mut fields: Vec<String> = msg
            .field
            .iter()
            .map(|f| {
                let ty = ty_of(f);
                let ty = if f.label() == Label::Repeated && !ty.starts_with('{') { format!("[{ty}]") } else { ty };
                format!("{}={}:{ty}", f.name(), f.number())
            })
            .collect();
        fields.sort();
        ours.insert(msg.name().to_owned(), fields);
    }
    let mut upstream = BTreeMap::new();
    for line in UPSTREAM.lines().filter(|l| !l.is_empty()) {
        let (name, fields) = line.split_once(':').unwrap();
        let mut fields: Vec<String> = fields.split_whitespace().map(str::to_owned).collect();
        fields.sort();
        upstream.insert(name.to_owned(), fields);
    }
    assert_eq!(ours, upstream);
}

#[test]
fn services_match_upstream() {
    let fds = FileDescriptorSet::decode(kubeedge_dmi::FILE_DESCRIPTOR_SET).unwrap();
    let file = fds.file.iter().find(|f| f.name() == "api.proto").unwrap();
    let services: Vec<(String, Vec<String>)> = file
        .service
        .iter()
        .map(|s| {
            (
                s.name().to_owned(),
                s.method
                    .iter()
                    .map(|m| {
                        format!(
                            "{}({})->{}",
                            m.name(),
                            m.input_type().trim_start_matches(".v1beta1."),
                            m.output_type().trim_start_matches(".v1beta1.")
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let expected = [
        (
            "DeviceManagerService",
            vec![
                "MapperRegister(MapperRegisterRequest)->MapperRegisterResponse",
                "ReportDeviceStatus(ReportDeviceStatusRequest)->ReportDeviceStatusResponse",
                "ReportDeviceStates(ReportDeviceStatesRequest)->ReportDeviceStatesResponse",
            ],
        ),
        (
            "DeviceMapperService",
            vec![
                "RegisterDevice(RegisterDeviceRequest)->RegisterDeviceResponse",
                "RemoveDevice(RemoveDeviceRequest)->RemoveDeviceResponse",
                "UpdateDevice(UpdateDeviceRequest)->UpdateDeviceResponse",
                "CreateDeviceModel(CreateDeviceModelRequest)->CreateDeviceModelResponse",
                "RemoveDeviceModel(RemoveDeviceModelRequest)->RemoveDeviceModelResponse",
                "UpdateDeviceModel(UpdateDeviceModelRequest)->UpdateDeviceModelResponse",
                "GetDevice(GetDeviceRequest)->GetDeviceResponse",
            ],
        ),
    ];
    let expected: Vec<(String, Vec<String>)> =
        expected.iter().map(|(s, m)| ((*s).to_owned(), m.iter().map(|x| (*x).to_owned()).collect())).collect();
    assert_eq!(services, expected);
}
