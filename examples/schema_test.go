package examples

import (
	"fmt"
	"strconv"

	"gopkg.in/yaml.v3"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// The schemas below are the fields the recipes use, named and nested as in
// the Kubernetes API (core/v1, apps/v1, policy/v1), the Gateway API (v1,
// v1beta1) and Envoy Gateway's api/v1alpha1. They are decoded strictly, so
// a field the real schema does not have (or a field at the wrong level)
// fails; a field a recipe starts to use is added here from the API.

// meta is an object's metadata.
type meta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

// typeMeta is apiVersion and kind.
type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

// intOrString is a port or a count written as a number or a name.
type intOrString string

// UnmarshalYAML accepts a scalar only.
func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	*v = intOrString(n.Value)
	return nil
}

// number returns the value as a number, and whether it is one.
func (v intOrString) number() (int, bool) {
	n, err := strconv.Atoi(string(v))
	return n, err == nil
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type serviceAccount struct {
	typeMeta                     `yaml:",inline"`
	Metadata                     meta  `yaml:"metadata"`
	AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
}

type configMap struct {
	typeMeta `yaml:",inline"`
	Metadata meta              `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type deployment struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Replicas int           `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	ServiceAccountName            string `yaml:"serviceAccountName"`
	AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int   `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		RunAsUser      *int  `yaml:"runAsUser"`
		RunAsGroup     *int  `yaml:"runAsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		MaxSkew           int           `yaml:"maxSkew"`
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			ResourceFieldRef *struct {
				Resource string `yaml:"resource"`
			} `yaml:"resourceFieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type service struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []servicePort     `yaml:"ports"`
	} `yaml:"spec"`
}

type servicePort struct {
	Name        string      `yaml:"name"`
	Port        int         `yaml:"port"`
	TargetPort  intOrString `yaml:"targetPort"`
	AppProtocol string      `yaml:"appProtocol"`
}

type networkPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			From []struct {
				NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
				PodSelector       *labelSelector `yaml:"podSelector"`
			} `yaml:"from"`
			Ports []struct {
				Port     intOrString `yaml:"port"`
				Protocol string      `yaml:"protocol"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
	} `yaml:"spec"`
}

type podDisruptionBudget struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		MaxUnavailable intOrString   `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

// targetRef is a Gateway API LocalPolicyTargetReference.
type targetRef struct {
	Group string `yaml:"group"`
	Kind  string `yaml:"kind"`
	Name  string `yaml:"name"`
}

// backendRef is a Gateway API BackendObjectReference.
type backendRef struct {
	Group     *string `yaml:"group"`
	Kind      *string `yaml:"kind"`
	Name      string  `yaml:"name"`
	Namespace string  `yaml:"namespace"`
	Port      int     `yaml:"port"`
}

type httpRoute struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		ParentRefs []struct {
			Name string `yaml:"name"`
		} `yaml:"parentRefs"`
		Rules []struct {
			BackendRefs []backendRef `yaml:"backendRefs"`
		} `yaml:"rules"`
	} `yaml:"spec"`
}

type referenceGrant struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		From []grantFrom `yaml:"from"`
		To   []grantTo   `yaml:"to"`
	} `yaml:"spec"`
}

type grantFrom struct {
	Group     string `yaml:"group"`
	Kind      string `yaml:"kind"`
	Namespace string `yaml:"namespace"`
}

type grantTo struct {
	Group string `yaml:"group"`
	Kind  string `yaml:"kind"`
	Name  string `yaml:"name"`
}

// processingModeOptions is Envoy Gateway's ProcessingModeOptions.
type processingModeOptions struct {
	Body       *string  `yaml:"body"`
	Attributes []string `yaml:"attributes"`
}

type envoyExtensionPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		TargetRefs []targetRef `yaml:"targetRefs"`
		ExtProc    []extProc   `yaml:"extProc"`
	} `yaml:"spec"`
}

// extProc is Envoy Gateway's ExtProc.
type extProc struct {
	BackendRefs    []backendRef `yaml:"backendRefs"`
	FailOpen       *bool        `yaml:"failOpen"`
	MessageTimeout string       `yaml:"messageTimeout"`
	ProcessingMode *struct {
		Request           *processingModeOptions `yaml:"request"`
		Response          *processingModeOptions `yaml:"response"`
		AllowModeOverride bool                   `yaml:"allowModeOverride"`
	} `yaml:"processingMode"`
	Metadata *struct {
		AccessibleNamespaces []string `yaml:"accessibleNamespaces"`
		WritableNamespaces   []string `yaml:"writableNamespaces"`
	} `yaml:"metadata"`
}

type backendTrafficPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		TargetRefs   []targetRef `yaml:"targetRefs"`
		LoadBalancer struct {
			Type           string `yaml:"type"`
			ConsistentHash *struct {
				Type   string `yaml:"type"`
				Cookie *struct {
					Name string `yaml:"name"`
				} `yaml:"cookie"`
			} `yaml:"consistentHash"`
			EndpointOverride *struct {
				ExtractFrom []struct {
					Header *string `yaml:"header"`
				} `yaml:"extractFrom"`
			} `yaml:"endpointOverride"`
		} `yaml:"loadBalancer"`
		Retry *struct {
			NumRetries int `yaml:"numRetries"`
			RetryOn    struct {
				Triggers []string `yaml:"triggers"`
			} `yaml:"retryOn"`
		} `yaml:"retry"`
	} `yaml:"spec"`
}

type clientTrafficPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		TargetRefs []targetRef `yaml:"targetRefs"`
		Headers    struct {
			EarlyRequestHeaders struct {
				Remove []string `yaml:"remove"`
			} `yaml:"earlyRequestHeaders"`
		} `yaml:"headers"`
	} `yaml:"spec"`
}

// envoyFilter is an Istio EnvoyFilter; its spec is decoded by Istio's own
// proto (istio.io/api), see envoyFilterSpec.
type envoyFilter struct {
	typeMeta `yaml:",inline"`
	Metadata meta `yaml:"metadata"`
	Spec     any  `yaml:"spec"`
}

// envoyFilterSpec decodes an EnvoyFilter's spec with protojson into Istio's
// API type: unknown fields and enum values fail.
func envoyFilterSpec(d doc) (*networkingv1alpha3.EnvoyFilter, error) {
	var ef envoyFilter
	if err := decodeStrict(d, &ef); err != nil {
		return nil, err
	}
	spec := &networkingv1alpha3.EnvoyFilter{}
	if err := yamlToProto(ef.Spec, spec); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", d, err)
	}
	return spec, nil
}

// kinds maps apiVersion/kind to the schema a document decodes into.
var kinds = map[string]func() any{
	"v1/ServiceAccount":                                   func() any { return &serviceAccount{} },
	"v1/ConfigMap":                                        func() any { return &configMap{} },
	"v1/Service":                                          func() any { return &service{} },
	"apps/v1/Deployment":                                  func() any { return &deployment{} },
	"policy/v1/PodDisruptionBudget":                       func() any { return &podDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":                  func() any { return &networkPolicy{} },
	"gateway.networking.k8s.io/v1/HTTPRoute":              func() any { return &httpRoute{} },
	"gateway.networking.k8s.io/v1beta1/ReferenceGrant":    func() any { return &referenceGrant{} },
	"gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy": func() any { return &envoyExtensionPolicy{} },
	"gateway.envoyproxy.io/v1alpha1/BackendTrafficPolicy": func() any { return &backendTrafficPolicy{} },
	"gateway.envoyproxy.io/v1alpha1/ClientTrafficPolicy":  func() any { return &clientTrafficPolicy{} },
	"networking.istio.io/v1alpha3/EnvoyFilter":            nil, // envoyFilterSpec
}

// decodeKind decodes a document into the schema of its apiVersion and kind.
func decodeKind(d doc) error {
	var tm typeMeta
	if err := d.node.Decode(&tm); err != nil {
		return fmt.Errorf("%s: %w", d, err)
	}
	key := tm.APIVersion + "/" + tm.Kind
	mk, ok := kinds[key]
	switch {
	case !ok:
		return fmt.Errorf("%s: %s has no schema here", d, key)
	case mk == nil:
		_, err := envoyFilterSpec(d)
		return err
	}
	return decodeStrict(d, mk())
}
